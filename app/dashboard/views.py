"""What each page shows, gathered from the services the JSON API uses, so the numbers are the API's.

The few views with no JSON counterpart (enrolment by site over time, the data-quality queries, the patient
list) are read off the same cohort timelines and cohort the endpoint analyses use at the same cut-off.
"""

import datetime as dt
from collections import Counter
from typing import Any

from app.db.engine import Database
from app.domain.endpoints.cohort import CONTROL_ARM, STUDY_ARM, build_cohort, patient_key
from app.domain.protocol import Protocol
from app.services import eligibility, endpoints, reports, screening, timeline
from app.services.endpoints import AsOf


def overview(db: Database, protocol: Protocol, *, as_of: AsOf, analysis_set: str) -> dict[str, Any]:
    primaries = {
        assay.value: endpoints.primary(
            db, protocol, assay=assay.value, analysis_set=analysis_set, as_of=as_of, explain=False
        )
        for assay in protocol.assays
    }
    day = endpoints.resolve_as_of(protocol, as_of)
    return {
        "as_of": day.isoformat(),
        "primary": primaries,
        "consort": endpoints.consort(db, protocol, as_of=as_of, explain=False),
        "enrolment": enrolment_by_site(db, protocol, as_of=as_of),
    }


def figures(db: Database, protocol: Protocol, *, as_of: AsOf, analysis_set: str) -> dict[str, Any]:
    return {
        "efs": endpoints.secondary(
            db, protocol, "efs", analysis_set=analysis_set, assay=None, as_of=as_of, explain=False
        ),
        "response": endpoints.mrd_response(
            db, protocol, analysis_set=analysis_set, as_of=as_of, explain=False
        ),
    }


def enrolment_by_site(db: Database, protocol: Protocol, *, as_of: AsOf) -> dict[str, Any]:
    """Cumulative study-arm enrolments per site at the end of each month with an enrolment (the cohort's
    definition of enrolled, as in CONSORT), and the historical controls apart."""
    day = endpoints.resolve_as_of(protocol, as_of)
    cohort = build_cohort(
        timelines=endpoints.cohort_timelines(db, protocol, as_of), protocol=protocol, as_of=day
    )
    sites = sorted(protocol.sites)
    study = [p for p in cohort.patients if p.arm == STUDY_ARM]
    sites += sorted({p.site for p in study} - set(sites))
    by_month: Counter[tuple[str, str]] = Counter()
    undated: Counter[str] = Counter()
    for patient in study:
        if patient.enrolment_date is None:
            undated[patient.site] += 1
        else:
            by_month[(patient.enrolment_date.strftime("%Y-%m"), patient.site)] += 1
    rows, running = [], Counter[str]()
    for month in sorted({m for m, _ in by_month}):
        for site in sites:
            running[site] += by_month[(month, site)]
        rows.append(
            {
                "month": month,
                "new": sum(by_month[(month, s)] for s in sites),
                "cumulative": {s: running[s] for s in sites},
                "total": sum(running.values()),
            }
        )
    return {
        "sites": sites,
        "months": rows,
        "undated": dict(undated),
        "enrolled": len(study),
        "target": protocol.study.target_enrolment,
        "controls": sum(p.arm == CONTROL_ARM for p in cohort.patients),
        "excluded": [{"patient": e.reference, "reason": e.reason} for e in cohort.excluded],
    }


def patients(db: Database, protocol: Protocol, *, as_of: AsOf) -> list[dict[str, Any]]:
    """Every patient on record at the cut-off, with site, arm and a count of MRD results."""
    day = endpoints.resolve_as_of(protocol, as_of)
    timelines = endpoints.cohort_timelines(db, protocol, as_of)
    cohort = build_cohort(timelines=timelines, protocol=protocol, as_of=day)
    arms = {patient_key(p.reference): p for p in cohort.patients}
    excluded = {patient_key(e.reference): e.reason for e in cohort.excluded}
    rows = []
    for patient_timeline in timelines:
        record = patient_timeline.record
        key = patient_key(record.reference)
        member = arms.get(key)
        enrolled_on = member.enrolment_date if member else None
        rows.append(
            {
                "id": key.split("/", 1)[1],
                "reference": key,
                "site": record.site or "unknown",
                "arm": member.arm if member else None,
                "status": "enrolled"
                if member
                else f"excluded: {excluded[key]}"
                if key in excluded
                else "not enrolled",
                "enrolled_on": enrolled_on.isoformat() if enrolled_on else None,
                "stratum": member.stratum if member else None,
                "mrd_results": len(patient_timeline.placements),
                "flags": len(member.flags) if member else 0,
            }
        )
    return sorted(rows, key=lambda r: (r["site"], r["enrolled_on"] or "9999", r["id"]))


def data_quality(db: Database, protocol: Protocol, *, as_of: AsOf) -> dict[str, Any]:
    """The queries the trial office sends to sites: anchor conflicts, results outside every window (or not
    placeable), not-evaluable samples, results stored but not usable, and codes no concept maps."""
    conflicts: list[dict[str, Any]] = []
    unplaced: list[dict[str, Any]] = []
    not_evaluable: list[dict[str, Any]] = []
    not_used: list[dict[str, Any]] = []
    for patient_timeline in endpoints.cohort_timelines(db, protocol, as_of):
        shown = timeline.render(patient_timeline, protocol)
        key = patient_key(shown["patient"])
        where = {"patient": key, "id": key.split("/", 1)[1], "site": shown["site"] or "unknown"}
        for name, anchor in shown["anchors"].items():
            if anchor["conflict"]:
                conflicts.append({**where, "anchor": name, **anchor})
        for result in shown["results"]:
            if result["unassigned_reason"]:
                unplaced.append({**where, **result})
            if result["classification"] == "not-evaluable":
                not_evaluable.append({**where, **result})
        not_used.extend({**where, **item} for item in shown["not_used"])
    return {
        "anchor_conflicts": conflicts,
        "unplaced_results": unplaced,
        "not_evaluable": not_evaluable,
        "not_used": not_used,
        "unmapped_codes": reports.unmapped_code_report(db, protocol)["codes"],
    }


def screening_log(db: Database, protocol: Protocol, *, until: dt.date | None) -> list[dict[str, Any]]:
    return screening.screening_log(db, protocol, site=None, since=None, until=until)


def patient(db: Database, protocol: Protocol, key: str, *, eligible_on: dt.date | None) -> dict[str, Any]:
    """The timeline and the eligibility answer, each exactly as its API route gives it."""
    return {
        "timeline": timeline.patient_timeline(db, protocol, key),
        "eligibility": eligibility.stored_patient_eligibility(db, protocol, key, eligible_on),
    }
