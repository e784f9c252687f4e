"""Reading a patient's record from another FHIR server (for CDS Hooks), with bounded time and pages."""

import re
from collections.abc import Iterable
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


FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class FhirServerError(Exception):
    """The EHR's FHIR server could not be read: unreachable, too slow, refused, or not allowed."""


def is_allowed(url: str, servers: Iterable[str]) -> bool:
    """Whether `url` lies under one of the configured FHIR base URLs: same scheme, host and port, and a path
    at or below the base's. The hook request names the server, so without this check a caller could make
    mrdhub fetch any address it can reach (server-side request forgery)."""
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    for server in servers:
        base = httpx.URL(server.rstrip("/"))
        same_origin = (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)
        path, root = target.path, base.path.rstrip("/")
        if same_origin and (path == root or path.startswith(root + "/")) and ".." not in path.split("/"):
            return True
    return False


def fetch_patient(
    *,
    base: str,
    patient_id: str,
    token: str | None,
    timeout_s: float,
    allowed: tuple[str, ...],
    skip: frozenset[str] = frozenset(),
) -> list[tuple[str | None, Resource]]:
    """The patient and their resources; `skip` names the searches the client already prefetched.

    Only servers under `allowed` are read, every page and linked resource included."""
    if not is_allowed(base, allowed):
        raise FhirServerError(f"{base} is not an allowed FHIR server (setting CDS_FHIR_SERVERS)")
    if not FHIR_ID.fullmatch(patient_id):
        raise FhirServerError("context.patientId is not a FHIR id")
    headers = {"Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    base = base.rstrip("/")

    def guard(request: httpx.Request) -> None:
        # Paging links come from the server: a next page elsewhere is not followed.
        if not is_allowed(str(request.url), allowed):
            raise FhirServerError(f"{base} linked outside the allowed FHIR servers")

    found: list[tuple[str | None, Resource]] = []
    try:
        with httpx.Client(
            timeout=timeout_s, headers=headers, follow_redirects=False, event_hooks={"request": [guard]}
        ) as client:
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
    try:
        body: Resource = response.json()
    except ValueError:
        raise FhirServerError(f"{url} did not answer JSON") from None
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
