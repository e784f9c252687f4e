"""CDS Hooks 2.0 `patient-view` service: the eligibility answer as cards for the EHR (cds-hooks.hl7.org)."""

import uuid
from typing import Any

from app.domain.protocol import Protocol
from app.fhir.adhoc import flatten, with_ids
from app.fhir.client import FhirServerError, fetch_patient
from app.fhir.outcome import FhirError
from app.fhir.resources import validate_resource
from app.services.eligibility import evaluate, record_from_resources

SERVICE_ID_SUFFIX = "-eligibility"
# Prefetch keys -> the FHIR search whose results they carry (discovery advertises these templates).
PREFETCH: dict[str, str] = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}",
    "medicationAdministrations": "MedicationAdministration?patient={{context.patientId}}",
    "medicationStatements": "MedicationStatement?patient={{context.patientId}}",
    "procedures": "Procedure?patient={{context.patientId}}",
    "consents": "Consent?patient={{context.patientId}}",
    "specimens": "Specimen?patient={{context.patientId}}",
    "researchSubjects": "ResearchSubject?patient={{context.patientId}}",
}


def service_id(protocol: Protocol) -> str:
    return f"{protocol.study.slug}{SERVICE_ID_SUFFIX}"


def discovery(protocol: Protocol) -> dict[str, Any]:
    return {
        "services": [
            {
                "hook": "patient-view",
                "id": service_id(protocol),
                "title": f"{protocol.study.identifier} eligibility",
                "description": (
                    f"Is this patient eligible for {protocol.study.identifier} ({protocol.study.title}), "
                    "criterion by criterion."
                ),
                "prefetch": PREFETCH,
            }
        ]
    }


def patient_view(
    protocol: Protocol,
    request: dict[str, Any],
    *,
    timeout_s: float,
    show_ineligible: bool,
    fhir_servers: tuple[str, ...] = (),
) -> dict[str, Any]:
    context = request.get("context") or {}
    if not isinstance(context, dict):
        raise ValueError("context must be an object")
    patient_id = context.get("patientId")
    if not isinstance(patient_id, str) or not patient_id:
        raise ValueError("context.patientId is required")
    prefetch = request.get("prefetch") or {}
    if not isinstance(prefetch, dict):
        raise ValueError("prefetch must be an object")
    items = [item for key in PREFETCH if prefetch.get(key) for item in flatten(prefetch[key])]
    have = {PREFETCH[key].split("/")[0].split("?")[0] for key in PREFETCH if prefetch.get(key)}
    missing = set(PREFETCH_TYPES) - have
    if missing:
        server = request.get("fhirServer")
        if not isinstance(server, str):
            return {
                "cards": [_problem_card(protocol, "no prefetch and no fhirServer to read the record from")]
            }
        token = (request.get("fhirAuthorization") or {}).get("access_token")
        try:
            items += fetch_patient(
                base=server,
                patient_id=patient_id,
                token=token,
                timeout_s=timeout_s,
                allowed=fhir_servers,
                skip=frozenset(have),
            )
        except FhirServerError as exc:
            return {"cards": [_problem_card(protocol, str(exc))]}
    valid, dropped = _valid(items)
    try:
        record = record_from_resources(protocol, with_ids(valid))
    except FhirError as exc:
        return {"cards": [_problem_card(protocol, str(exc))]}
    answer = evaluate(protocol, record, None)
    cards = []
    if answer.overall.value == "eligible":
        cards.append(
            _card(protocol, "info", f"Eligible for {protocol.study.identifier}", _criteria_text(answer))
        )
    elif answer.overall.value == "incomplete":
        detail = "Data that would decide:\n" + "\n".join(f"- {m}" for m in answer.missing)
        cards.append(
            _card(protocol, "warning", f"{protocol.study.identifier}: eligibility incomplete", detail)
        )
    elif show_ineligible:
        unmet = [
            c
            for c in answer.criteria
            if (c.kind.value == "inclusion") == (c.status.value == "not_met") and c.status.value != "unknown"
        ]
        detail = "\n".join(f"- {c.text}: {c.reason}" for c in unmet)
        cards.append(_card(protocol, "info", f"Not eligible for {protocol.study.identifier}", detail))
    if dropped and cards:
        cards[0]["detail"] += f"\n\n{dropped} resource(s) were not valid FHIR R4 and were not read."
    return {"cards": cards}


PREFETCH_TYPES = tuple(dict.fromkeys(t.split("/")[0].split("?")[0] for t in PREFETCH.values()))


def _valid(
    items: list[tuple[str | None, dict[str, Any]]],
) -> tuple[list[tuple[str | None, dict[str, Any]]], int]:
    valid = []
    for full_url, resource in items:
        try:
            validate_resource(resource)
        except FhirError:
            continue
        valid.append((full_url, resource))
    return valid, len(items) - len(valid)


def _criteria_text(answer: Any) -> str:
    return "\n".join(f"- {c.text}: {c.status.value.replace('_', ' ')} ({c.reason})" for c in answer.criteria)


def _card(protocol: Protocol, indicator: str, summary: str, detail: str) -> dict[str, Any]:
    url = f"{protocol.study.identifier_system}/study/{protocol.study.identifier}"
    return {
        "uuid": str(uuid.uuid4()),
        "summary": summary[:140],
        "indicator": indicator,
        "detail": detail,
        "source": {"label": f"mrdhub — {protocol.study.identifier}", "url": url},
        "links": [{"label": f"{protocol.study.identifier} trial record", "url": url, "type": "absolute"}],
    }


def _problem_card(protocol: Protocol, why: str) -> dict[str, Any]:
    return _card(protocol, "warning", f"{protocol.study.identifier} eligibility could not be checked", why)
