"""The primary endpoint's and EFS's per-patient items, from derived rows where they answer the cut-off
(issue 8).

A patient's items computed at a cut-off day from their record as it is now are the items of every cut-off
whose day keeps the same clinical facts (contributions.same_cut: between two consecutive fact days, or
from the last one on) and whose recorded-by instant is at or after the patient's latest write: then the
versions read and the facts kept are the same as the full computation's. Rows that are missing, out of
date (app/db/derived.py) or computed for other days are rebuilt from the record as it is now and stored;
patients written to after the cut-off are computed live, as before.
"""

import datetime as dt
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from app.db import derived
from app.db.engine import Database
from app.domain.endpoints.contributions import CohortEntry, cohort_entries, cohort_entry, same_cut
from app.domain.endpoints.efs import CENSORED, TIMED, EfsItem, TimedGroup, efs_item
from app.domain.endpoints.primary import COUNTED, CountedGroup, PrimaryItem, primary_item
from app.domain.protocol import AnalysisSet, Assay, Protocol
from app.domain.timeline import build_timeline
from app.services.ingest import RETRYABLE_SQLSTATES, db_sqlstate
from app.services.patients import load_records

log = logging.getLogger("mrdhub.summaries")

PRIMARY, EFS = "primary", "efs"
NO_ASSAY = "-"  # EFS asked without an assay (the assay is part of a row's key)
EFS_ASSAYS: tuple[Assay | None, ...] = (None, *Assay)
# A timed EFS row's `reason` is "<days, zero-padded to DAYS_WIDTH> <origin> [<event concept>]", so that
# patients known by number only are grouped by (arm, status, days) in SQL. Seven digits hold any span
# between two dates (date.max - date.min < 10**7 days).
DAYS_WIDTH = 7
NOT_ENROLLED = "not-enrolled"  # a stored row saying the patient contributes nothing
REBUILD_CHUNK = 500  # patients read, computed and stored per transaction
ANALYZE_AFTER = 1000  # patients rebuilt by one request after which the table's statistics are refreshed


@dataclass(frozen=True, slots=True)
class CutOff:
    day: dt.date  # the clinical cut-off in the trial's zone
    recorded_by: dt.datetime  # naive UTC: the versions recorded by then count


@dataclass(frozen=True, slots=True)
class Known:
    """A patient's items computed at one cut-off day from the record as it is now."""

    valid_from: dt.date  # the span of cut-off days that see the same record (derived.UNBOUNDED: open)
    valid_until: dt.date | None  # None: open
    recorded: dt.datetime  # the latest write read
    items: dict[tuple[str, Assay], PrimaryItem | None]  # by (analysis set, assay); None: not enrolled
    efs: dict[tuple[str, str], EfsItem | None] = field(default_factory=dict)  # by (set, assay or NO_ASSAY)

    def answers(self, cut: CutOff) -> bool:
        """Whether these are the items of the cut-off: the same clinical facts kept, the same versions."""
        spans = self.valid_from <= cut.day and (self.valid_until is None or cut.day <= self.valid_until)
        return spans and self.recorded <= cut.recorded_by


ItemT = TypeVar("ItemT")
GroupT = TypeVar("GroupT")


def primary_items(
    db: Database,
    protocol: Protocol,
    *,
    analysis_set: AnalysisSet,
    assay: Assay,
    cut: CutOff,
    explain: bool,
) -> tuple[list[PrimaryItem], list[CountedGroup]]:
    """Every visible patient's item at the cut-off; without `explain`, the counted patients without flags
    as counts only (primary_to_json prints who they are only with explain)."""
    key = (analysis_set.name, assay)

    def live(entry: CohortEntry) -> PrimaryItem:
        return primary_item(entry=entry, analysis_set=analysis_set, assay=assay, protocol=protocol)

    def groups(session: Any, analysis: derived.Analysis, anonymous: derived.Anonymous) -> list[CountedGroup]:
        counts = derived.counted_groups(session, analysis, anonymous)
        return [CountedGroup(*g) for g in counts if g[3] != NOT_ENROLLED]

    return _items(
        db,
        protocol,
        analysis=derived.Analysis(PRIMARY, analysis_set.name, assay.value, protocol.version),
        cut=cut,
        counted=None if explain else COUNTED,
        groups=groups,
        from_row=_item,
        from_known=lambda known: known.items[key],
        live=live,
    )


def efs_items(
    db: Database,
    protocol: Protocol,
    *,
    analysis_set: AnalysisSet,
    assay: Assay | None,
    cut: CutOff,
    explain: bool,
) -> tuple[list[EfsItem], list[TimedGroup]]:
    """Every visible patient's EFS item at the cut-off; without `explain`, the timed patients without flags
    as (arm, days, event) counts only (efs_to_json prints who they are only with explain)."""
    key = (analysis_set.name, NO_ASSAY if assay is None else assay.value)

    def live(entry: CohortEntry) -> EfsItem:
        return efs_item(entry=entry, analysis_set=analysis_set, assay=assay, protocol=protocol)

    def groups(session: Any, analysis: derived.Analysis, anonymous: derived.Anonymous) -> list[TimedGroup]:
        counts = derived.timed_groups(session, analysis, anonymous, days_width=DAYS_WIDTH)
        return [
            TimedGroup(arm, int(days), status != CENSORED, n)
            for arm, status, days, n in counts
            if status != NOT_ENROLLED
        ]

    return _items(
        db,
        protocol,
        analysis=derived.Analysis(EFS, key[0], key[1], protocol.version),
        cut=cut,
        counted=None if explain else TIMED,
        groups=groups,
        from_row=_efs_item,
        from_known=lambda known: known.efs[key],
        live=live,
    )


def _items(
    db: Database,
    protocol: Protocol,
    *,
    analysis: derived.Analysis,
    cut: CutOff,
    counted: Collection[str] | None,
    groups: Callable[[Any, derived.Analysis, derived.Anonymous], list[GroupT]],
    from_row: Callable[[tuple[Any, ...]], ItemT | None],
    from_known: Callable[[Known], ItemT | None],
    live: Callable[[CohortEntry], ItemT],
) -> tuple[list[ItemT], list[GroupT]]:
    """The items of one analysis; patients whose rows have a status in `counted` and no flags are read as
    `groups` (None: every patient as an item).

    A current row whose span holds the cut-off's day is used when the patient has not been written to
    since the cut-off; such a patient without one is rebuilt at the cut-off's day (and stored); a patient
    written to after the cut-off is computed live.
    """
    # Without explain, patients counted without flags are read as counts, and those not enrolled not at all.
    anonymous = (
        None if counted is None else derived.Anonymous(cut.day, cut.recorded_by, {*counted, NOT_ENROLLED})
    )
    found_groups: list[GroupT] = []
    with db.read() as session:
        if not db.is_sqlite:  # the counts and the other rows from one snapshot (SQLite's reads are)
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        if anonymous is not None:
            found_groups = groups(session, analysis, anonymous)
        patients = derived.stored(session, analysis, skip_resources_of=counted or (), anonymous=anonymous)
    items: list[ItemT] = []
    stale, late = [], []
    for found in patients:
        if not found.rows:
            stale.append(found.patient)
        elif found.rows[0].recorded > cut.recorded_by:
            late.append(found.patient)  # every current row has read the same versions
        elif row := next((r for r in found.rows if r.spans(cut.day)), None):
            if (item := from_row(row.item)) is not None:
                items.append(item)
        else:
            stale.append(found.patient)
    for start in range(0, len(stale), REBUILD_CHUNK):
        rebuilt = rebuild(db, protocol, stale[start : start + REBUILD_CHUNK], day=cut.day)
        for patient, known in rebuilt.items():
            if not known.answers(cut):
                late.append(patient)
            elif (item := from_known(known)) is not None:
                items.append(item)
        late.extend(p for p in stale[start : start + REBUILD_CHUNK] if p not in rebuilt)
    if len(stale) >= ANALYZE_AFTER:
        with db.transaction() as session:
            derived.refresh_statistics(session)
    items.extend(_live(db, protocol, late, cut=cut, item=live))
    return items, found_groups


def _live(
    db: Database,
    protocol: Protocol,
    patients: list[str],
    *,
    cut: CutOff,
    item: Callable[[CohortEntry], ItemT],
) -> Iterator[ItemT]:
    """The items of patients as recorded by the cut-off, computed as the full analysis does."""
    for start in range(0, len(patients), REBUILD_CHUNK):
        with db.read() as session:
            records = load_records(
                session, protocol, patients[start : start + REBUILD_CHUNK], recorded_by=cut.recorded_by
            )
        timelines = [build_timeline(record=r, protocol=protocol) for _, r in sorted(records.items())]
        for found in cohort_entries(timelines=timelines, protocol=protocol, as_of=cut.day):
            yield item(found)


def rebuild(db: Database, protocol: Protocol, patients: Sequence[str], *, day: dt.date) -> dict[str, Known]:
    """Compute the patients' primary and EFS items at the cut-off `day` for every analysis set and assay
    from their records as they are now, and store them with the generations read before the records."""
    with db.read() as session:
        everyone, generations = derived.generations(session, patients)
        records = load_records(session, protocol, list(patients))
        latest = derived.latest_writes(session, list(records))
    found: dict[str, Known] = {}
    rows: list[dict[str, Any]] = []
    for patient, record in records.items():
        if patient not in latest:
            continue  # deleted meanwhile: nothing to keep
        first, valid_until = same_cut(record, day)
        valid_from = derived.UNBOUNDED if first is None else first
        timeline = build_timeline(record=record, protocol=protocol)
        entry = cohort_entry(timeline=timeline, protocol=protocol, as_of=day)
        common = {
            "patient": patient,
            "protocol": protocol.version,
            "generation": generations[patient],
            "everyone": everyone,
            "valid_from": valid_from,
            "valid_until": valid_until,
            "recorded": latest[patient],
        }
        items: dict[tuple[str, Assay], PrimaryItem | None] = {}
        for chosen in protocol.analysis_sets.values():
            for assay in Assay:
                item = None
                if entry is not None:
                    item = primary_item(entry=entry, analysis_set=chosen, assay=assay, protocol=protocol)
                items[(chosen.name, assay)] = item
                key = {"endpoint": PRIMARY, "analysis_set": chosen.name, "assay": assay.value}
                rows.append({**key, **common, **_columns(item, record.reference)})
        efs: dict[tuple[str, str], EfsItem | None] = {}
        for chosen in protocol.analysis_sets.values():
            for efs_assay in EFS_ASSAYS:
                timed = None
                if entry is not None:
                    timed = efs_item(entry=entry, analysis_set=chosen, assay=efs_assay, protocol=protocol)
                name = NO_ASSAY if efs_assay is None else efs_assay.value
                efs[(chosen.name, name)] = timed
                key = {"endpoint": EFS, "analysis_set": chosen.name, "assay": name}
                rows.append({**key, **common, **_efs_columns(timed, record.reference)})
        found[patient] = Known(valid_from, valid_until, latest[patient], items, efs)
    try:
        with db.transaction() as session:
            derived.store(session, rows)
    except DBAPIError as exc:
        # Keeping the rows only saves later requests work; a lock wait (SQLite) or a race lost to another
        # reader's rebuild must not fail this request, whose items are computed already.
        lost = isinstance(exc, OperationalError) if db.is_sqlite else db_sqlstate(exc) in RETRYABLE_SQLSTATES
        if not lost:
            raise
        log.warning("derived rows of %d patients not stored: %s", len(found), type(exc).__name__)
    return found


def _columns(item: PrimaryItem | None, reference: str) -> dict[str, Any]:
    if item is None:
        item = PrimaryItem(reference, None, "", "", NOT_ENROLLED, None, (), ())
    return {
        "reference": item.patient,
        "arm": item.arm,
        "status": item.status,
        "stratum": item.stratum,
        "site": item.site,
        "reason": item.reason,
        "resources": derived.dump_list(item.resources),
        "flags": derived.dump_list(item.flags),
    }


def _item(columns: tuple[Any, ...]) -> PrimaryItem | None:
    reference, arm, status, stratum, site, reason, resources, flags = columns
    if status == NOT_ENROLLED:
        return None
    return PrimaryItem(
        reference, arm, stratum, site, status, reason, derived.load_list(resources), derived.load_list(flags)
    )


def _efs_columns(item: EfsItem | None, reference: str) -> dict[str, Any]:
    if item is None:
        item = EfsItem(reference, None, "", "", NOT_ENROLLED, None, (), ())
    reason = item.reason
    if item.timed:
        assert item.days is not None and item.origin is not None
        reason = " ".join(
            x for x in (f"{item.days:0{DAYS_WIDTH}d}", item.origin.isoformat(), item.event) if x
        )
    return {
        "reference": item.patient,
        "arm": item.arm,
        "status": item.status,
        "stratum": item.stratum,
        "site": item.site,
        "reason": reason,
        "resources": derived.dump_list(item.resources),
        "flags": derived.dump_list(item.flags),
    }


def _efs_item(columns: tuple[Any, ...]) -> EfsItem | None:
    reference, arm, status, stratum, site, reason, resources, flags = columns
    if status == NOT_ENROLLED:
        return None
    found = (reference, arm, stratum, site, status)
    if status not in TIMED:
        return EfsItem(*found, reason, derived.load_list(resources), derived.load_list(flags))
    days, origin, *event = str(reason).split(" ", 2)
    return EfsItem(
        *found,
        None,
        derived.load_list(resources),
        derived.load_list(flags),
        dt.date.fromisoformat(origin),
        int(days),
        event[0] if event else None,
    )
