"""The data cut-off applied to clinical dates (issue 6: "only resources ... with clinical dates on or before
[as_of] count").

The caller has already dropped resource versions recorded after `as_of`; here every fact whose *clinical*
date lies after it is dropped too, so a result collected, an event with onset, or a cost incurred after the
cut-off never counts, and adding such data later leaves every answer unchanged byte for byte.

Rules (a date is "after" the cut-off when its earliest possible local day, in the site's zone, is after
`as_of`: a partial date "2026-07" is after a cut-off of 2026-06-30, "2026-06" is not):

* facts dated after the cut-off are removed (MRD results by collection date, conditions by onset,
  observations, consents, adverse events, costs, enrolments by start, trial-office anchors);
* an exposure (e.g. a blinatumomab bag) that started on or before the cut-off but ends after it was still
  running at the cut-off: its end is removed and it is marked ongoing, so a course is not yet complete;
* an enrolment that ends after the cut-off had not ended at the cut-off: its end is removed;
* a death after the cut-off is removed.

Facts without a date are kept: nothing says they are after the cut-off.
"""

import datetime as dt
from dataclasses import replace

from app.domain.record import PatientRecord
from app.domain.timepoints import ClinicalDate


def earliest_day(date: ClinicalDate, zone: str) -> dt.date:
    """The local day of a precise date, or the first day of a year / year-month."""
    day = date.day_in(zone)
    return day if day is not None else dt.date(date.year, date.month or 1, 1)


def is_after(date: ClinicalDate | None, *, zone: str, as_of: dt.date) -> bool:
    return date is not None and earliest_day(date, zone) > as_of


def record_as_of(record: PatientRecord, *, as_of: dt.date) -> PatientRecord:
    zone = record.zone

    def after(date: ClinicalDate | None) -> bool:
        return is_after(date, zone=zone, as_of=as_of)

    exposures = []
    for exposure in record.exposures:
        if after(exposure.start) or (exposure.start is None and after(exposure.end)):
            continue
        exposures.append(replace(exposure, end=None, ongoing=True) if after(exposure.end) else exposure)
    return replace(
        record,
        deceased=None if after(record.deceased) else record.deceased,
        conditions=tuple(c for c in record.conditions if not after(c.onset)),
        observations=tuple(o for o in record.observations if not after(o.effective)),
        exposures=tuple(exposures),
        consents=tuple(c for c in record.consents if not after(c.date)),
        mrd_results=tuple(r for r in record.mrd_results if not after(r.sample.collected)),
        enrolments=tuple(
            replace(e, end=None) if after(e.end) else e for e in record.enrolments if not after(e.start)
        ),
        adverse_events=tuple(a for a in record.adverse_events if not after(a.date)),
        costs=tuple(c for c in record.costs if not after(c.date)),
        manual_anchors=tuple(a for a in record.manual_anchors if a.date <= as_of),
    )


def last_contact(record: PatientRecord) -> tuple[dt.date, str] | None:
    """The latest precise clinical day in the record and the resource that carries it.

    Call on a record already cut at `as_of`. Every dated fact is evidence that the patient was seen (a
    result, an administration, a cost, an event); partial dates cannot say on which day. Ties go to the
    first reference in sorted order, so the answer does not depend on the order of the facts.
    """
    zone = record.zone
    dated: list[tuple[ClinicalDate | None, str]] = [(record.deceased, record.reference)]
    dated += [(c.onset, c.reference) for c in record.conditions if not c.refuted]
    dated += [(o.effective, o.reference) for o in record.observations]
    dated += [(e.start, e.reference) for e in record.exposures]
    dated += [(e.end, e.reference) for e in record.exposures]
    dated += [(c.date, c.reference) for c in record.consents]
    dated += [(r.sample.collected, r.sample.reference) for r in record.mrd_results]
    dated += [(e.start, e.reference) for e in record.enrolments]
    dated += [(e.end, e.reference) for e in record.enrolments]
    dated += [(a.date, a.reference) for a in record.adverse_events]
    dated += [(c.date, c.reference) for c in record.costs]
    days = [(day, ref) for date, ref in dated if date is not None and (day := date.day_in(zone)) is not None]
    days += [(a.date, a.reference) for a in record.manual_anchors]
    if not days:
        return None
    latest = max(day for day, _ in days)
    return latest, min(ref for day, ref in days if day == latest)
