"""Resources that are not stored: a Bundle posted for an ad-hoc evaluation, or what a CDS client prefetched.

They are validated exactly as at ingest, given ids where they have none, and their bundle-internal
references are resolved, so the same extraction reads them as it reads the store.
"""

import copy
from typing import Any

from app.fhir.outcome import FhirError, error
from app.fhir.references import rewrite_references
from app.fhir.resources import validate_resource

Resource = dict[str, Any]
BUNDLE_TYPES = ("collection", "searchset", "transaction", "batch", "document")


def resources_of_bundle(data: Any) -> list[Resource]:
    """Every resource of a collection / searchset / transaction Bundle, validated; nothing is stored."""
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise error(400, "invalid", "Expected a Bundle", "Bundle.resourceType")
    if data.get("type") not in BUNDLE_TYPES:
        raise error(
            400,
            "invalid",
            f"Bundle.type {data.get('type')!r} is not one of {', '.join(BUNDLE_TYPES)}",
            "Bundle.type",
        )
    entries = data.get("entry", [])
    if not isinstance(entries, list):
        raise error(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    found: list[tuple[str | None, Resource]] = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if resource is None:
            continue
        try:
            validate_resource(resource)
        except FhirError as exc:
            raise exc.prefixed(f"Bundle.entry[{index}].resource") from None
        if resource["resourceType"] == "OperationOutcome":
            continue
        found.append((entry.get("fullUrl"), resource))
    return with_ids(found)


def with_ids(items: list[tuple[str | None, Resource]]) -> list[Resource]:
    """Give each resource an id (from its fullUrl where it has none) and resolve references between them."""
    aliases: dict[str, str] = {}
    prepared: list[Resource] = []
    for n, (full_url, original) in enumerate(items):
        resource = copy.deepcopy(original)
        if not resource.get("id"):
            tail = (full_url or "").rsplit(":", 1)[-1].rsplit("/", 1)[-1]
            resource["id"] = tail if tail and len(tail) <= 64 else f"adhoc-{n}"
        resource.setdefault("meta", {}).setdefault("versionId", "1")
        reference = f"{resource['resourceType']}/{resource['id']}"
        if full_url:
            aliases[full_url] = reference
        prepared.append(resource)
    for resource in prepared:
        rewrite_references(resource, lambda r: aliases.get(r, _relative(r)))
    return prepared


def _relative(reference: str) -> str:
    """An absolute reference to a FHIR server ("https://ehr/fhir/Patient/1") read as "Patient/1"."""
    if reference.startswith(("http://", "https://")):
        parts = reference.rstrip("/").split("/")
        if len(parts) >= 2:
            return "/".join(parts[-2:]) if "_history" not in parts else "/".join(parts[-4:-2])
    return reference


def flatten(value: Any) -> list[tuple[str | None, Resource]]:
    """A prefetched value (a resource, or a searchset Bundle) as (fullUrl, resource) pairs."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        return [
            (e.get("fullUrl"), e["resource"])
            for e in value.get("entry", [])
            if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") not in ("OperationOutcome", None)
        ]
    return [(None, value)] if value.get("resourceType") else []
