"""Use cases of issue 4: a patient's timeline, and the cohort's chosen result at one timepoint."""

import datetime as dt
from decimal import Decimal
from typing import Any

from app.db.engine import Database
from app.db.patients import patient_ids
from app.domain.mrd import MrdClassification
from app.domain.protocol import Protocol
from app.domain.timeline import PatientTimeline, build_timeline
from app.domain.timepoints import Anchor, Course, Placement, TimepointOutcome, trial_day
from app.services.errors import InvalidInput, NotFound
from app.services.patients import load_record, load_records

INDUCTION_DAY1 = "induction-day1"


def patient_timeline(db: Database, protocol: Protocol, key: str) -> dict[str, Any]:
    with db.read() as session:
        record = load_record(session, protocol, key)
    return render(build_timeline(record=record, protocol=protocol), protocol)


def cohort_at_timepoint(
    db: Database, protocol: Protocol, timepoint: str, *, assay: str, site: str | None
) -> dict[str, Any]:
    try:
        definition = protocol.timepoint(timepoint)
    except KeyError:
        raise NotFound(
            f"No timepoint '{timepoint}' in protocol {protocol.version}", parameter="timepoint"
        ) from None
    if assay not in {a.value for a in definition.assays}:
        allowed = ", ".join(a.value for a in definition.assays)
        raise InvalidInput(
            f"Assay '{assay}' is not measured at {timepoint} (one of: {allowed})", parameter="assay"
        )
    if site is not None and site not in protocol.sites:
        raise InvalidInput(f"Unknown site '{site}'", parameter="site")
    with db.read() as session:
        records = load_records(session, protocol, patient_ids(session))
    rows = []
    for patient_id, record in records.items():
        if site is not None and record.site != site:
            continue
        timeline = build_timeline(record=record, protocol=protocol)
        outcome = timeline.outcome(timepoint, assay)
        assert outcome is not None
        rows.append({"patient": f"Patient/{patient_id}", "site": record.site, **_outcome(outcome, timeline)})
    return {
        "timepoint": timepoint,
        "assay": assay,
        "site": site,
        "protocol_version": protocol.version,
        "patients": rows,
    }


def render(timeline: PatientTimeline, protocol: Protocol) -> dict[str, Any]:
    record = timeline.record
    day1 = timeline.anchors.get(INDUCTION_DAY1)
    return {
        "patient": record.reference,
        "site": record.site,
        "zone": record.zone,
        "protocol_version": protocol.version,
        "anchors": {name: _anchor(anchor) for name, anchor in sorted(timeline.anchors.items())},
        "courses": {name: _course(course) for name, course in sorted(timeline.courses.items())},
        "timepoints": [_outcome(o, timeline) for o in timeline.outcomes],
        "results": [
            _result(p, timeline.classifications[p.sample.reference], day1.date if day1 else None)
            for p in sorted(
                timeline.placements, key=lambda p: (p.local_date or dt.date.min, p.sample.reference)
            )
        ],
        "not_used": [
            {"observation": ref, "reason": "status not final, amended or corrected"}
            for ref in record.unused_mrd
        ],
    }


def _anchor(anchor: Anchor) -> dict[str, Any]:
    return {
        "date": anchor.date.isoformat() if anchor.date else None,
        "conflict": anchor.conflict,
        "reason": anchor.reason,
        "sources": [
            {"date": c.date.isoformat(), "kind": c.kind.value, "reference": c.reference}
            for c in anchor.candidates
        ],
    }


def _course(course: Course | None) -> dict[str, Any] | None:
    if course is None:
        return None
    return {
        "start": course.start.isoformat(),
        "end": course.end.isoformat() if course.end else None,
        "infused_days": course.infused_days,
        "complete": course.complete,
        "interruptions": [
            {"first_day": i.first_day.isoformat(), "last_day": i.last_day.isoformat()}
            for i in course.interruptions
        ],
        "administrations": list(course.references),
    }


def _outcome(outcome: TimepointOutcome, timeline: PatientTimeline) -> dict[str, Any]:
    def brief(placement: Placement) -> dict[str, Any]:
        classification = timeline.classifications[placement.sample.reference]
        return {
            "observation": placement.sample.reference,
            "local_date": placement.local_date.isoformat() if placement.local_date else None,
            **_classification(classification),
        }

    window = outcome.window
    return {
        "timepoint": outcome.timepoint,
        "assay": outcome.assay.value,
        "required": outcome.required,
        "status": outcome.status.value,
        "selection": outcome.selection.value,
        "window": None
        if window is None
        else {
            "target": window.target.isoformat(),
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
        },
        "reason": outcome.reason,
        "result": brief(outcome.selected) if outcome.selected else None,
        "alternatives": [brief(p) for p in outcome.alternatives],
    }


def _result(placement: Placement, classification: MrdClassification, day1: dt.date | None) -> dict[str, Any]:
    sample = placement.sample
    day = placement.local_date
    return {
        "observation": sample.reference,
        "assay": sample.assay.value,
        "specimen": sample.specimen,
        "collected": _clinical_text(placement),
        "local_date": day.isoformat() if day else None,
        "trial_day": trial_day(date=day, day1=day1) if day and day1 else None,
        "timepoints": list(placement.timepoints),
        "unassigned_reason": placement.unassigned.value if placement.unassigned else None,
        "placement": placement.reason,
        "nearest": None
        if placement.nearest_timepoint is None
        else {"timepoint": placement.nearest_timepoint, "days_outside": placement.days_outside},
        **_classification(classification),
    }


def _classification(c: MrdClassification) -> dict[str, Any]:
    return {
        "value_as_sent": c.value_as_sent,
        "fraction": _decimal(c.fraction),
        "comparator": c.comparator.value if c.comparator else None,
        "threshold_fraction": _decimal(c.threshold_fraction),
        "classification": c.classification.value,
        "rule": c.rule.value,
        "reason": c.reason,
    }


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _clinical_text(placement: Placement) -> str | None:
    collected = placement.sample.collected
    if collected.instant is not None:
        return collected.instant.isoformat()
    if collected.year == 1:
        return None
    parts = [
        f"{collected.year:04d}",
        f"{collected.month:02d}" if collected.month else None,
        f"{collected.day:02d}" if collected.day else None,
    ]
    return "-".join(p for p in parts if p)
