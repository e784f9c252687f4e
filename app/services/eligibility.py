"""Use cases of issue 5: is this patient eligible, and why — for stored patients and for ad-hoc bundles."""

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from app.db.engine import Database
from app.domain.eligibility import EligibilityAnswer, evaluate_eligibility
from app.domain.protocol import Protocol
from app.domain.record import PatientRecord
from app.domain.timeline import build_timeline
from app.fhir.adhoc import resources_of_bundle
from app.fhir.extract import patient_record
from app.fhir.outcome import error
from app.services.patients import load_record


def today_at_site(protocol: Protocol, record: PatientRecord) -> dt.date:
    """The default reference date: today in the site's time zone (PROTOCOL.md section 4)."""
    return dt.datetime.now(ZoneInfo(record.zone)).date()


def evaluate(protocol: Protocol, record: PatientRecord, as_of: dt.date | None) -> EligibilityAnswer:
    timeline = build_timeline(record=record, protocol=protocol)
    reference = as_of or today_at_site(protocol, record)
    return evaluate_eligibility(record=record, timeline=timeline, protocol=protocol, as_of=reference)


def stored_patient_eligibility(
    db: Database, protocol: Protocol, key: str, as_of: dt.date | None
) -> dict[str, Any]:
    with db.read() as session:
        record = load_record(session, protocol, key)
    return render(evaluate(protocol, record, as_of), record)


def record_from_resources(protocol: Protocol, resources: list[dict[str, Any]]) -> PatientRecord:
    """The one patient of a set of unstored resources, read like stored ones."""
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise error(400, "invalid", f"Expected exactly one Patient, found {len(patients)}", "Bundle.entry")
    organizations = {f"Organization/{r['id']}": r for r in resources if r["resourceType"] == "Organization"}
    studies = frozenset(
        f"ResearchStudy/{r['id']}"
        for r in resources
        if r["resourceType"] == "ResearchStudy"
        and any(
            i.get("system") == protocol.study.identifier_system
            and i.get("value") == protocol.study.identifier
            for i in r.get("identifier", [])
        )
    )
    others = [r for r in resources if r["resourceType"] not in ("Patient", "Organization", "ResearchStudy")]
    return patient_record(
        protocol=protocol, patient=patients[0], resources=others, organizations=organizations, studies=studies
    )


def adhoc_eligibility(protocol: Protocol, data: Any, as_of: dt.date | None) -> dict[str, Any]:
    """Evaluated in memory from the posted Bundle; nothing is written."""
    record = record_from_resources(protocol, resources_of_bundle(data))
    return render(evaluate(protocol, record, as_of), record)


def render(answer: EligibilityAnswer, record: PatientRecord) -> dict[str, Any]:
    return {
        "patient": record.reference,
        "site": record.site,
        "overall": answer.overall.value,
        "as_of": answer.as_of.isoformat(),
        "protocol_version": answer.protocol_version,
        "criteria": [
            {
                "id": c.id,
                "kind": c.kind.value,
                "text": c.text,
                "status": c.status.value,
                "reason": c.reason,
                "evidence": list(c.evidence),
            }
            for c in answer.criteria
        ],
        "missing": list(answer.missing),
        "pending": list(answer.pending),
        "flags": [
            {
                "kind": f.kind.value,
                "criterion": f.criterion,
                "message": f.message,
                "evidence": list(f.evidence),
            }
            for f in answer.flags
        ],
    }
