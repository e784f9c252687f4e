"""The audit trail: an AuditEvent for every access to patient data and a Provenance for every ingested bundle.

AuditEvents follow the IHE Basic Audit Log Patterns shape (who: the client; what: the resources and the
patient; when; from where; outcome). They are FHIR resources in the same store, so the trial office reads
them at /fhir/AuditEvent; writes record theirs in the same transaction as the write itself.
"""

import datetime as dt
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from sqlalchemy.orm import Session

from app.domain.access import Principal
from app.fhir.bundle import Entry
from app.fhir.dates import instant

CLIENT_SYSTEM = "urn:mrdhub:client"
ACTIONS = {
    "create": "C",
    "update": "U",
    "delete": "D",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "search-type": "E",
    "history-type": "R",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
}
# Where the request came from (client address), set per request by the audit middleware.
request_origin: ContextVar[str | None] = ContextVar("request_origin", default=None)
# Set by the audit middleware for each request; a write that audits itself in its own transaction marks
# it so the middleware does not record the same access twice.
audited_in_transaction: ContextVar[list[bool] | None] = ContextVar("audited_in_transaction", default=None)


def mark_audited() -> None:
    marks = audited_in_transaction.get()
    if marks is not None:
        marks.append(True)


def audit_event(
    *,
    principal: Principal | None,
    subtype: str,
    outcome: str,
    description: str,
    entities: Iterable[str],
    recorded: dt.datetime,
) -> dict[str, Any]:
    """outcome: "0" success, "4" minor failure (refused, invalid), "8" serious failure (server error)."""
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
            ]
        },
        "who": {
            "identifier": {
                "system": CLIENT_SYSTEM,
                "value": principal.client_id if principal else "anonymous",
            }
        },
        "requestor": True,
    }
    origin = request_origin.get()
    if origin:
        agent["network"] = {"address": origin, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype}],
        "action": ACTIONS.get(subtype, "E"),
        "recorded": instant(recorded),
        "outcome": outcome,
        "outcomeDesc": description,
        "agent": [agent],
        "source": {
            "observer": {"display": "mrdhub"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
    }
    listed = sorted(set(entities))
    if listed:
        event["entity"] = [_entity(reference) for reference in listed]
    return event


def _entity(reference: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"what": {"reference": reference}}
    if reference.startswith("Patient/"):
        entity["role"] = {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}
    return entity


def provenance(
    *, principal: Principal, targets: Iterable[str], recorded: dt.datetime, bundle_id: str | None
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in sorted(set(targets))],
        "recorded": instant(recorded),
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]
        },
        "agent": [{"who": {"identifier": {"system": CLIENT_SYSTEM, "value": principal.client_id}}}],
    }
    if bundle_id:
        resource["entity"] = [
            {"role": "source", "what": {"identifier": {"system": "urn:mrdhub:bundle", "value": bundle_id}}}
        ]
    return resource


def store(session: Session, now: dt.datetime, *resources: dict[str, Any]) -> None:
    """Write trail resources through the ordinary write path (no checks: they are the server's own)."""
    from app.services.writes import Run, apply_entries

    entries = [Entry(i, "POST", r["resourceType"], resource=r) for i, r in enumerate(resources)]
    apply_entries(Run(session, now, trusted=True), entries)


def patients_in(resources: Iterable[dict[str, Any] | None]) -> set[str]:
    """Patient references among written resources (the Patient itself, or its subject)."""
    found: set[str] = set()
    for resource in resources:
        if not resource:
            continue
        if resource.get("resourceType") == "Patient" and resource.get("id"):
            found.add(f"Patient/{resource['id']}")
        for key in ("subject", "patient", "individual"):
            reference = (
                (resource.get(key) or {}).get("reference") if isinstance(resource.get(key), dict) else None
            )
            if isinstance(reference, str) and reference.startswith("Patient/"):
                found.add(reference.split("/_history/")[0])
    return found
