"""Reading a patient's record from another FHIR server (for CDS Hooks), with bounded time and pages."""

from typing import Any

import httpx

from app.fhir.adhoc import flatten

Resource = dict[str, Any]
# What eligibility reads, searched by patient on the EHR's FHIR server.
PATIENT_SEARCHES = (
    "Condition",
    "Observation",
    "MedicationAdministration",
    "MedicationStatement",
    "Procedure",
    "Consent",
    "Specimen",
    "ResearchSubject",
)
MAX_PAGES = 20


class FhirServerError(Exception):
    """The EHR's FHIR server could not be read: unreachable, too slow, or it refused."""


def fetch_patient(
    *, base: str, patient_id: str, token: str | None, timeout_s: float, skip: frozenset[str] = frozenset()
) -> list[tuple[str | None, Resource]]:
    """The patient and their resources; `skip` names the searches the client already prefetched."""
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    base = base.rstrip("/")
    found: list[tuple[str | None, Resource]] = []
    try:
        with httpx.Client(timeout=timeout_s, headers=headers) as client:
            if "Patient" not in skip:
                found.append((f"{base}/Patient/{patient_id}", _get(client, f"{base}/Patient/{patient_id}")))
            for resource_type in PATIENT_SEARCHES:
                if resource_type not in skip:
                    found.extend(_search(client, f"{base}/{resource_type}?patient={patient_id}"))
            for reference in _linked(found):
                found.append((f"{base}/{reference}", _get(client, f"{base}/{reference}")))
    except httpx.HTTPError as exc:
        raise FhirServerError(f"{type(exc).__name__} reading {base}") from None
    return found


def _get(client: httpx.Client, url: str) -> Resource:
    response = client.get(url)
    if response.status_code != 200:
        raise FhirServerError(f"{url} answered {response.status_code}")
    body: Resource = response.json()
    return body


def _search(client: httpx.Client, url: str | None) -> list[tuple[str | None, Resource]]:
    found: list[tuple[str | None, Resource]] = []
    for _ in range(MAX_PAGES):
        if url is None:
            break
        page = _get(client, url)
        found.extend(flatten(page))
        url = next((link["url"] for link in page.get("link", []) if link.get("relation") == "next"), None)
    return found


def _linked(found: list[tuple[str | None, Resource]]) -> list[str]:
    """The managing Organization and the ResearchStudy of any ResearchSubject, read once each."""
    wanted: dict[str, None] = {}
    for _, resource in found:
        if resource.get("resourceType") == "Patient":
            reference = (resource.get("managingOrganization") or {}).get("reference")
        elif resource.get("resourceType") == "ResearchSubject":
            reference = (resource.get("study") or {}).get("reference")
        else:
            continue
        if isinstance(reference, str) and reference.count("/") == 1 and "://" not in reference:
            wanted[reference] = None
    return list(wanted)
