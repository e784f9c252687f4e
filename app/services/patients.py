"""Loading patients' records: stored resources read into the trial's facts."""

from datetime import datetime

from sqlalchemy.orm import Session

from app.db import patients as store
from app.domain.protocol import Protocol
from app.domain.record import PatientRecord
from app.fhir.extract import patient_record
from app.services.errors import NotFound


def resolve_patient_id(session: Session, key: str) -> str:
    row = store.find_patient(session, key)
    if row is None:
        raise NotFound(f"No patient '{key}'", parameter="id")
    return str(row.logical_id)


def load_records(
    session: Session, protocol: Protocol, patient_ids: list[str], *, recorded_by: datetime | None = None
) -> dict[str, PatientRecord]:
    """Records by patient id; a patient not yet recorded at `recorded_by` is left out."""
    related = store.related_resources(session, patient_ids, recorded_by=recorded_by)
    organizations = {f"Organization/{o['id']}": o for o in store.current_of_type(session, "Organization")}
    studies = frozenset(
        f"ResearchStudy/{s['id']}"
        for s in store.resources_by_identifier(
            session, "ResearchStudy", protocol.study.identifier_system, protocol.study.identifier
        )
    )
    records: dict[str, PatientRecord] = {}
    for reference, resources in related.items():
        patient = next((r for r in resources if r["resourceType"] == "Patient"), None)
        if patient is None:
            continue
        others = [r for r in resources if r["resourceType"] != "Patient"]
        records[reference.split("/")[1]] = patient_record(
            protocol=protocol, patient=patient, resources=others, organizations=organizations, studies=studies
        )
    return records


def load_record(session: Session, protocol: Protocol, key: str) -> PatientRecord:
    patient_id = resolve_patient_id(session, key)
    return load_records(session, protocol, [patient_id])[patient_id]
