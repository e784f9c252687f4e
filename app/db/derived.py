"""Derived per-patient rows of the endpoint analyses (issue 8, "derived per-patient rows updated on ingest,
if they are never stale"): all their SQL.

Never stale, without locks between readers and writers: every write of a resource linked to a patient
increments the patient's generation in the writer's own transaction (`invalidate`, called by
repository.write_versions, the one place every write goes through); a write of a resource that every
record reads (Organization, ResearchStudy: services/patients.load_records) increments the generation of
"*". A derived row carries the generations that were current *before* the data it was computed from were
read, and is used only while both are still current. A write that commits after that read increments a
generation, so the row is ignored; a write that committed before it is in the data read.
"""

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    literal_column,
    or_,
    outerjoin,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db.sites import PATIENT_LINKS, visible
from app.db.tables import (
    PatientGenerationRow,
    PatientSummaryRow,
    ResourceRow,
    ResourceVersionRow,
    SearchIndexRow,
)

EVERYONE = "*"
# As app/db/patients.TRAIL_TYPES (which imports this module's importer): not part of a patient's record.
TRAIL_TYPES = ("AuditEvent", "Provenance")
# Read into every patient's record: services/patients.load_records (managing organisation, the study).
SHARED_TYPES = ("Organization", "ResearchStudy")


def _table(model: type[PatientGenerationRow | PatientSummaryRow]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


GENERATIONS = _table(PatientGenerationRow)
SUMMARIES = _table(PatientSummaryRow)


# --- writes: invalidation ---------------------------------------------------------------------------


def links_of(session: Session, resource_pks: Sequence[int]) -> list[tuple[str, str, str | None]]:
    """(resource type, param, value) of the stored patient links of these resources, before a rewrite."""
    if not resource_pks:
        return []
    rows = session.execute(
        select(SearchIndexRow.resource_type, SearchIndexRow.param, SearchIndexRow.value).where(
            SearchIndexRow.resource_pk.in_(resource_pks), SearchIndexRow.param.in_(PATIENT_LINKS)
        )
    )
    return [(str(t), str(p), v) for t, p, v in rows]


def invalidate(
    session: Session,
    *,
    written: Iterable[tuple[str, str]],
    links: Iterable[tuple[str, str, str | None]],
) -> None:
    """Increment the generation of every patient whose record these writes change.

    `written`: (type, logical id) of every version written; `links`: (type, param, value) search values of
    the resources written, the old ones (a resource moved to another patient, or deleted) and the new.
    Keys are taken in sorted order, so that concurrent writers lock them in the same order.
    """
    patients: set[str] = set()
    for resource_type, logical_id in written:
        if resource_type == "Patient":
            patients.add(logical_id)
        elif resource_type in SHARED_TYPES:
            patients.add(EVERYONE)
    for resource_type, param, value in links:
        if param in PATIENT_LINKS and resource_type not in TRAIL_TYPES and value and value[:8] == "Patient/":
            patients.add(value[8:])
    if not patients:
        return
    statement = _upsert(session, GENERATIONS).values(
        [{"patient": p, "generation": 1} for p in sorted(patients)]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["patient"], set_={"generation": GENERATIONS.c.generation + 1}
        )
    )


def _upsert(session: Session, table: Table) -> Any:
    """INSERT ... ON CONFLICT for the dialect at hand (both spell it alike)."""
    name = session.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


# --- reads ---------------------------------------------------------------------------------------------


def generations(session: Session, patients: Collection[str]) -> tuple[int, dict[str, int]]:
    """(generation of "*", generation of each patient); a patient never written is at 0."""
    keys = [EVERYONE, *patients]
    query = select(PatientGenerationRow.patient, PatientGenerationRow.generation).where(
        PatientGenerationRow.patient.in_(keys)
    )
    found = {str(patient): int(generation) for patient, generation in session.execute(query)}
    return found.get(EVERYONE, 0), {p: found.get(p, 0) for p in patients}


def latest_writes(session: Session, patients: Collection[str]) -> dict[str, datetime]:
    """Per patient, the latest lastUpdated of any version of the resources their record is read from (the
    same links as app/db/patients.related_resources, the Patient included)."""
    if not patients:
        return {}
    references = [f"Patient/{p}" for p in patients]
    linked = (
        select(SearchIndexRow.value.label("patient"), func.max(ResourceVersionRow.last_updated).label("at"))
        .join(ResourceVersionRow, ResourceVersionRow.resource_pk == SearchIndexRow.resource_pk)
        .where(
            SearchIndexRow.param.in_(PATIENT_LINKS),
            SearchIndexRow.value.in_(references),
            SearchIndexRow.resource_type.not_in(TRAIL_TYPES),
        )
        .group_by(SearchIndexRow.value)
    )
    own = (
        select(
            (literal("Patient/") + ResourceRow.logical_id).label("patient"),
            func.max(ResourceVersionRow.last_updated).label("at"),
        )
        .join(ResourceVersionRow, ResourceVersionRow.resource_pk == ResourceRow.pk)
        .where(ResourceRow.resource_type == "Patient", ResourceRow.logical_id.in_(list(patients)))
        .group_by(ResourceRow.logical_id)
    )
    latest: dict[str, datetime] = {}
    rows: Sequence[Any] = session.execute(union_all(linked, own)).all()
    for reference, at in rows:
        key = str(reference)[8:]
        latest[key] = max(at, latest.get(key, at))
    return latest


@dataclass(frozen=True, slots=True)
class Row:
    valid_from: date  # UNBOUNDED: every earlier day too
    valid_until: date | None  # None: every later day too
    recorded: datetime
    item: tuple[Any, ...]  # ITEM_COLUMNS

    def spans(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_until is None or day <= self.valid_until)


@dataclass(frozen=True, slots=True)
class Stored:
    patient: str  # logical id
    rows: tuple[Row, ...]  # the current rows, one per span of cut-off days


UNBOUNDED = date.min


# What a summary row holds besides its key, in the order `stored` returns it.
ITEM_COLUMNS = ("reference", "arm", "status", "stratum", "site", "reason", "resources", "flags")


@dataclass(frozen=True, slots=True)
class Analysis:
    """Which rows: one endpoint analysis (set x assay) as computed under one protocol file."""

    endpoint: str
    analysis_set: str
    assay: str
    protocol: str


@dataclass(frozen=True, slots=True)
class Anonymous:
    """Rows that answer a cut-off and are read as counts only: counted, without flags."""

    day: date
    recorded_by: datetime
    statuses: Collection[str]  # the counted statuses


# The patient's generation, joined to ResourceRow (a patient never written to has none: 0).
OWN = GENERATIONS.alias("own")


def _current(s: Any, analysis: Analysis) -> ColumnElement[bool]:
    """The row (of SUMMARIES or an alias) is the patient's (ResourceRow, joined to OWN) and current."""
    everyone = select(PatientGenerationRow.generation).where(PatientGenerationRow.patient == EVERYONE)
    return and_(
        s.endpoint == analysis.endpoint,
        s.analysis_set == analysis.analysis_set,
        s.assay == analysis.assay,
        s.patient == ResourceRow.logical_id,
        s.protocol == analysis.protocol,
        s.everyone == func.coalesce(everyone.scalar_subquery(), 0),
        s.generation == func.coalesce(OWN.c.generation, 0),
    )


def _patients() -> Any:
    """ResourceRow with each patient's generation (OWN), for the joins of `_current`."""
    return outerjoin(ResourceRow, OWN, OWN.c.patient == ResourceRow.logical_id)


def _anonymous(s: Any, anonymous: Anonymous) -> ColumnElement[bool]:
    return and_(
        s.valid_from <= anonymous.day,
        or_(s.valid_until.is_(None), s.valid_until >= anonymous.day),
        s.recorded <= anonymous.recorded_by,
        s.status.in_(list(anonymous.statuses)),
        s.flags == "[]",
    )


def _visible_patients() -> tuple[ColumnElement[bool], ...]:
    """The patients the current site scope may see, as app/db/patients.patient_ids lists them."""
    return (ResourceRow.resource_type == "Patient", ResourceRow.deleted.is_(False), visible("Patient"))


def counted_groups(
    session: Session, analysis: Analysis, anonymous: Anonymous
) -> list[tuple[str, str, str, str, int]]:
    """(arm, stratum, site, status, number of patients) over the visible patients' anonymous rows."""
    s = SUMMARIES.c
    query = (
        select(s.arm, s.stratum, s.site, s.status, func.count())
        .select_from(_patients())
        .join(SUMMARIES, and_(_current(s, analysis), _anonymous(s, anonymous)))
        .where(*_visible_patients())
        .group_by(s.arm, s.stratum, s.site, s.status)
        .order_by(s.arm, s.stratum, s.site, s.status)
    )
    return [(str(a), str(t), str(i), str(u), int(n)) for a, t, i, u, n in session.execute(query)]


def timed_groups(
    session: Session, analysis: Analysis, anonymous: Anonymous, *, days_width: int
) -> list[tuple[str, str, str, int]]:
    """(arm, status, days, number of patients) over the visible patients' anonymous rows of an analysis
    whose `reason` starts with the time in days, zero-padded to `days_width` (the EFS rows)."""
    s = SUMMARIES.c
    days = func.substr(s.reason, 1, literal_column(str(int(days_width)))).label("days")
    query = (
        select(s.arm, s.status, days, func.count())
        .select_from(_patients())
        .join(SUMMARIES, and_(_current(s, analysis), _anonymous(s, anonymous)))
        .where(*_visible_patients())
        .group_by(s.arm, s.status, days)
        .order_by(s.arm, s.status, days)
    )
    return [(str(a), str(u), str(d), int(n)) for a, u, d, n in session.execute(query)]


def stored(
    session: Session,
    analysis: Analysis,
    *,
    skip_resources_of: Collection[str] = (),
    anonymous: Anonymous | None = None,
) -> list[Stored]:
    """Every patient the current site scope may see (but those read by `counted_groups`), with their
    current rows.

    One statement, so the generations compared are those of one snapshot (read `counted_groups` in the
    same snapshot). `resources` is read as "[]" for rows whose status is in `skip_resources_of` (what the
    answer will not print).
    """
    s = SUMMARIES.c
    resources = (
        case((s.status.in_(list(skip_resources_of)), literal("[]")), else_=s.resources)
        if skip_resources_of
        else s.resources
    )
    columns = [resources if name == "resources" else s[name] for name in ITEM_COLUMNS]
    query = (
        select(ResourceRow.logical_id, s.valid_from, s.valid_until, s.recorded, *columns)
        .select_from(_patients())
        .outerjoin(SUMMARIES, _current(s, analysis))
        .where(*_visible_patients())
        .order_by(ResourceRow.pk)
    )
    if anonymous is not None:
        other = SUMMARIES.alias("counted")
        query = query.where(~exists().where(_current(other.c, analysis), _anonymous(other.c, anonymous)))
    found: dict[str, list[Row]] = {}
    # Through the connection: thousands of plain rows, no ORM loading needed.
    for patient, valid_from, valid_until, recorded, *item in session.connection().execute(query):
        rows = found.setdefault(str(patient), [])
        if item[0] is not None:
            rows.append(Row(valid_from, valid_until, recorded, tuple(item)))
    return [Stored(patient, tuple(rows)) for patient, rows in found.items()]


def store(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace summary rows, and drop the same patients' rows of earlier generations.

    Two readers may rebuild the same patient at once: the last one wins, and each row carries the
    generations of what its reader read, so a row from older data is simply not current.
    """
    if not rows:
        return
    keys = ("endpoint", "analysis_set", "assay", "patient", "valid_from")
    ordered = sorted(rows, key=lambda r: tuple(r[k] for k in keys))
    fresh = {(r["endpoint"], r["patient"]): (r["generation"], r["everyone"], r["protocol"]) for r in rows}
    s = SUMMARIES.c
    session.execute(
        delete(SUMMARIES).where(
            s.endpoint == bindparam("old_endpoint"),
            s.patient == bindparam("old_patient"),
            or_(
                s.generation != bindparam("old_generation"),
                s.everyone != bindparam("old_everyone"),
                s.protocol != bindparam("old_protocol"),
            ),
        ),
        [
            {
                "old_endpoint": endpoint,
                "old_patient": patient,
                "old_generation": generation,
                "old_everyone": everyone,
                "old_protocol": protocol,
            }
            for (endpoint, patient), (generation, everyone, protocol) in sorted(fresh.items())
        ],
    )
    statement = _upsert(session, SUMMARIES)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: statement.excluded[c.name] for c in SUMMARIES.c if c.name not in keys},
        ),
        list(ordered),
    )


def refresh_statistics(session: Session) -> None:
    """After a large rebuild (a cold start, a new protocol file): without statistics PostgreSQL's planner
    takes the freshly filled table for empty and joins it by nested loops (seconds instead of
    milliseconds at 3,000 patients) until autovacuum gets to it."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"ANALYZE {SUMMARIES.name}"))


def dump_list(values: Iterable[str]) -> str:
    return json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))


def load_list(text: str) -> tuple[str, ...]:
    return () if text == "[]" else tuple(json.loads(text))
