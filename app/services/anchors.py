"""Anchors set by the trial office (PROTOCOL.md section 2), stored as versioned FHIR Basic resources.

Keeping them in the FHIR store gives them history and the same audit as clinical data; the timeline
reads them back as trial-office anchor candidates, which win over data sources.
"""

import datetime as dt
from typing import Any

from app.db.engine import Database
from app.domain.protocol import Protocol
from app.fhir.bundle import Entry
from app.fhir.extract import (
    ANCHOR_DATE_EXTENSION,
    ANCHOR_NAME_EXTENSION,
    ANCHOR_REASON_EXTENSION,
    MARKER_SYSTEM,
    TRIAL_ANCHOR_CODE,
)
from app.services.errors import InvalidInput
from app.services.ingest import write_one
from app.services.patients import resolve_patient_id

ANCHOR_IDENTIFIER_SYSTEM = "urn:mrdhub:trial-anchor"


def set_anchor(
    db: Database, protocol: Protocol, key: str, name: str, *, date: dt.date, reason: str, retries: int
) -> dict[str, Any]:
    patient_id = _patient(db, key)
    _known(protocol, name)
    basic = {
        "resourceType": "Basic",
        "identifier": [{"system": ANCHOR_IDENTIFIER_SYSTEM, "value": f"{patient_id}:{name}"}],
        "code": {"coding": [{"system": MARKER_SYSTEM, "code": TRIAL_ANCHOR_CODE}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "created": dt.date.today().isoformat(),
        "extension": [
            {"url": ANCHOR_NAME_EXTENSION, "valueCode": name},
            {"url": ANCHOR_DATE_EXTENSION, "valueDate": date.isoformat()},
            {"url": ANCHOR_REASON_EXTENSION, "valueString": reason},
        ],
    }
    query = [("identifier", f"{ANCHOR_IDENTIFIER_SYSTEM}|{patient_id}:{name}")]
    outcome = write_one(db, Entry(0, "PUT", "Basic", query=query, resource=basic), retries=retries, checks=())
    return {
        "patient": f"Patient/{patient_id}",
        "anchor": name,
        "date": date.isoformat(),
        "reason": reason,
        "record": outcome.location,
    }


def remove_anchor(db: Database, protocol: Protocol, key: str, name: str, *, retries: int) -> None:
    patient_id = _patient(db, key)
    _known(protocol, name)
    query = [("identifier", f"{ANCHOR_IDENTIFIER_SYSTEM}|{patient_id}:{name}")]
    write_one(db, Entry(0, "DELETE", "Basic", query=query), retries=retries, checks=())


def _patient(db: Database, key: str) -> str:
    with db.read() as session:
        return resolve_patient_id(session, key)


def _known(protocol: Protocol, name: str) -> None:
    if name not in protocol.anchors:
        raise InvalidInput(
            f"Unknown anchor '{name}' (one of: {', '.join(protocol.anchors)})", parameter="name"
        )
