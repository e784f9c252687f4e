"""Each patient's place in the cohort, one patient at a time, and the cut-offs at which it stays the same.

The endpoint analyses are per patient up to their aggregation: build_cohort maps each timeline on its own
(only the duplicate check crosses patients) and `as_of` reaches a patient only through
cutoff.record_as_of, which compares each fact's day with the cut-off. So a patient's contribution at one
cut-off is their contribution at every cut-off that puts each fact on the same side (`same_cut`); from the
latest fact day on (`settled_day`) that is the whole record. The service keeps such contributions as
derived rows (app/db/derived.py) instead of rebuilding every timeline on every request.
"""

import datetime as dt
from collections.abc import Iterable, Iterator

from app.domain.endpoints.cohort import CohortExclusion, CohortPatient, build_cohort, patient_key
from app.domain.endpoints.cutoff import earliest_day
from app.domain.endpoints.errors import EndpointError
from app.domain.protocol import Protocol
from app.domain.record import PatientRecord
from app.domain.timeline import PatientTimeline
from app.domain.timepoints import ClinicalDate

CohortEntry = CohortPatient | CohortExclusion


def cohort_entry(*, timeline: PatientTimeline, protocol: Protocol, as_of: dt.date) -> CohortEntry | None:
    """The patient in the cohort at the cut-off, excluded from it, or None when not enrolled."""
    cohort = build_cohort(timelines=[timeline], protocol=protocol, as_of=as_of)
    if cohort.patients:
        return cohort.patients[0]
    return cohort.excluded[0] if cohort.excluded else None


def cohort_entries(
    *, timelines: Iterable[PatientTimeline], protocol: Protocol, as_of: dt.date
) -> Iterator[CohortEntry]:
    """cohort_entry for every timeline; a patient given twice is an error, as in build_cohort."""
    seen: set[str] = set()
    for timeline in timelines:
        key = patient_key(timeline.record.reference)
        if key in seen:
            raise EndpointError(f"{key} was given twice")
        seen.add(key)
        found = cohort_entry(timeline=timeline, protocol=protocol, as_of=as_of)
        if found is not None:
            yield found


def fact_days(record: PatientRecord) -> list[dt.date]:
    """The day of every dated fact record_as_of looks at, with its rule (a partial date counts from the
    first day of its period); the cut-off keeps a fact exactly when its day is on or before the cut-off."""
    zone = record.zone
    dates: list[ClinicalDate | None] = [record.deceased]
    dates += [c.onset for c in record.conditions]
    dates += [o.effective for o in record.observations]
    dates += [d for e in record.exposures for d in (e.start, e.end)]
    dates += [c.date for c in record.consents]
    dates += [r.sample.collected for r in record.mrd_results]
    dates += [d for e in record.enrolments for d in (e.start, e.end)]
    dates += [a.date for a in record.adverse_events]
    dates += [c.date for c in record.costs]
    days = [earliest_day(d, zone) for d in dates if d is not None]
    days += [a.date for a in record.manual_anchors]
    return days


def settled_day(record: PatientRecord) -> dt.date | None:
    """From this cut-off on the record stays whole (None: nothing is dated, every cut-off sees it all)."""
    return max(fact_days(record), default=None)


def same_cut(record: PatientRecord, as_of: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """The first and last cut-off days (None: unbounded) at which record_as_of gives the record it gives at
    `as_of`: between two consecutive fact days, every fact is on the same side of the cut-off."""
    days = fact_days(record)
    first = max((d for d in days if d <= as_of), default=None)
    following = min((d for d in days if d > as_of), default=None)
    return first, None if following is None else following - dt.timedelta(days=1)
