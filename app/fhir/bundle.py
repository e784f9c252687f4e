"""Reading transaction/batch Bundles into entries, and writing the Bundles that answer them (http.html)."""

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from app.fhir.outcome import FhirError, Issue, error, operation_outcome
from app.fhir.resources import is_resource_type, validate_resource

Method = Literal["GET", "POST", "PUT", "DELETE"]
# Transaction processing order (http.html#trules): DELETE, then POST, then PUT/PATCH, then GET.
ORDER: dict[str, int] = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
STATUS_TEXT = {
    200: "200 OK",
    201: "201 Created",
    204: "204 No Content",
    400: "400 Bad Request",
    404: "404 Not Found",
    409: "409 Conflict",
    410: "410 Gone",
    412: "412 Precondition Failed",
    422: "422 Unprocessable Entity",
}


@dataclass
class Entry:
    """One request of a bundle (or a single RESTful interaction, seen as a one-entry bundle)."""

    index: int
    method: Method
    resource_type: str
    logical_id: str | None = None
    query: list[tuple[str, str]] | None = None  # conditional update/delete, or a search
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    path: str = "Bundle.entry[0]"
    # A batch entry that could not even be read is answered with its error; the others go on.
    failure: FhirError | None = None


@dataclass
class EntryOutcome:
    status: int
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    resource: dict[str, Any] | None = None
    issues: list[Issue] = field(default_factory=list)
    is_read: bool = False  # a GET answers with its resource whatever the Prefer header says


def parse_bundle(data: Any, *, max_entries: int) -> tuple[str, list[Entry]]:
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        found = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
        raise error(400, "invalid", f"Expected a Bundle, got {found!r}", "Bundle.resourceType")
    bundle_type = data.get("type")
    if bundle_type not in ("transaction", "batch"):
        raise error(
            400,
            "invalid",
            f"Bundle.type must be 'transaction' or 'batch', not {bundle_type!r}",
            "Bundle.type",
        )
    raw_entries = data.get("entry", [])
    if not isinstance(raw_entries, list):
        raise error(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    if len(raw_entries) > max_entries:
        raise error(
            413, "too-costly", f"{len(raw_entries)} entries; at most {max_entries} per bundle", "Bundle.entry"
        )
    entries: list[Entry] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(parse_entry(index, raw))
        except FhirError as exc:
            if bundle_type == "transaction":
                raise
            entries.append(_broken(index, exc))
    return bundle_type, entries


def _broken(index: int, exc: FhirError) -> Entry:
    return Entry(
        index=index, method="GET", resource_type="Bundle", path=f"Bundle.entry[{index}]", failure=exc
    )


def parse_entry(index: int, raw: Any) -> Entry:
    path = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise error(400, "structure", "A bundle entry must be an object", path)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise error(400, "required", "Entry has no request", f"{path}.request")
    method = request.get("method")
    if method not in tuple(ORDER):  # not `in ORDER`: a list or object sent as method is unhashable
        raise error(
            400,
            "not-supported",
            f"request.method {method!r} is not supported (GET, POST, PUT, DELETE)",
            f"{path}.request.method",
        )
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise error(400, "required", "request.url is required", f"{path}.request.url")
    resource_type, logical_id, query = parse_url(url, f"{path}.request.url")
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if resource is None:
            raise error(400, "required", f"A {method} entry needs a resource", f"{path}.resource")
        try:
            validate_resource(resource, expected_type=resource_type)
        except FhirError as exc:
            raise exc.prefixed(f"{path}.resource") from None
    if method == "POST" and (logical_id or query):
        raise error(400, "invalid", "POST goes to the type, e.g. 'Observation'", f"{path}.request.url")
    if method in ("PUT", "DELETE") and not (logical_id or query):
        raise error(400, "invalid", f"{method} needs 'Type/id' or 'Type?search'", f"{path}.request.url")
    full_url = raw.get("fullUrl")
    return Entry(
        index=index,
        method=method,
        resource_type=resource_type,
        logical_id=logical_id,
        query=query,
        resource=resource,
        full_url=full_url if isinstance(full_url, str) else None,
        if_none_exist=_str(request.get("ifNoneExist")),
        if_match=_str(request.get("ifMatch")),
        path=path,
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_url(url: str, where: str) -> tuple[str, str | None, list[tuple[str, str]] | None]:
    """`Type`, `Type/id` or `Type?params` (an absolute URL to this server's base is accepted too)."""
    split = urlsplit(url)
    path = split.path.strip("/")
    if split.scheme:
        path = path.split("/fhir/", 1)[-1] if "/fhir/" in f"/{path}" else path
    parts = [p for p in path.split("/") if p]
    if not parts or not is_resource_type(parts[-1] if len(parts) == 1 else parts[0]):
        raise error(400, "not-supported", f"Unknown resource type in url '{url}'", where)
    if len(parts) > 2:
        parts = parts[-2:] if is_resource_type(parts[-2]) else parts
    resource_type = parts[0]
    logical_id = parts[1] if len(parts) == 2 else None
    query = parse_qsl(split.query, keep_blank_values=True) if split.query else None
    return resource_type, logical_id, query


def entry_response(outcome: EntryOutcome, *, prefer: str) -> dict[str, Any]:
    response: dict[str, Any] = {"status": STATUS_TEXT.get(outcome.status, str(outcome.status))}
    if outcome.location:
        response["location"] = outcome.location
    if outcome.etag:
        response["etag"] = outcome.etag
    if outcome.last_modified:
        response["lastModified"] = outcome.last_modified
    if outcome.issues and (outcome.status >= 400 or prefer == "OperationOutcome" or _has_warnings(outcome)):
        response["outcome"] = operation_outcome(outcome.issues)
    elif prefer == "OperationOutcome":
        response["outcome"] = operation_outcome([])
    entry: dict[str, Any] = {}
    if outcome.resource is not None and (prefer == "representation" or outcome.is_read):
        entry["fullUrl"] = outcome.location.split("/_history/")[0] if outcome.location else None
        entry["resource"] = outcome.resource
        if entry["fullUrl"] is None:
            del entry["fullUrl"]
    entry["response"] = response
    return entry


def _has_warnings(outcome: EntryOutcome) -> bool:
    return any(i.severity in ("warning", "error") for i in outcome.issues)


def response_bundle(bundle_type: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": f"{bundle_type}-response", "entry": entries}
