"""Reads: read, vread, history and search, answered as FHIR resources and searchset/history Bundles."""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from app.db import repository as repo
from app.db.search import conditions
from app.db.tables import ResourceVersionRow
from app.fhir.bundle import Entry, EntryOutcome
from app.fhir.dates import instant
from app.fhir.outcome import FhirError, error, operation_outcome
from app.fhir.search import SearchQuery, parse_search


@dataclass(frozen=True)
class Found:
    content: dict[str, Any]
    version_id: int
    last_updated: str


def read(session: Session, resource_type: str, logical_id: str) -> Found:
    row = repo.get(session, resource_type, logical_id)
    if row is None or row.version_id == 0:
        raise error(404, "not-found", f"{resource_type}/{logical_id} is not known")
    if row.deleted:
        raise error(410, "deleted", f"{resource_type}/{logical_id} was deleted (version {row.version_id})")
    return Found(repo.loads(row.content), row.version_id, instant(row.last_updated))


def vread(session: Session, resource_type: str, logical_id: str, version_id: str) -> Found:
    row = repo.get(session, resource_type, logical_id)
    version = (
        repo.version(session, row, int(version_id)) if row is not None and version_id.isdigit() else None
    )
    if version is None:
        raise error(404, "not-found", f"{resource_type}/{logical_id}/_history/{version_id} is not known")
    if version.deleted:
        raise error(410, "deleted", f"{resource_type}/{logical_id} version {version_id} is a deletion")
    return Found(repo.loads(version.content), version.version_id, instant(version.last_updated))


def history(session: Session, resource_type: str, logical_id: str, base: str) -> dict[str, Any]:
    row = repo.get(session, resource_type, logical_id)
    if row is None or row.version_id == 0:
        raise error(404, "not-found", f"{resource_type}/{logical_id} is not known")
    versions = repo.versions(session, row)
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(versions),
        "entry": [_history_entry(v, resource_type, logical_id, base) for v in versions],
    }


def type_history(
    session: Session, resource_type: str, base: str, *, count: int, offset: int
) -> dict[str, Any]:
    total, rows = repo.type_history(session, resource_type, count=count, offset=offset)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "total": total}
    bundle["link"] = _links(f"{base}/{resource_type}/_history", [], count=count, offset=offset, total=total)
    bundle["entry"] = [_history_entry(v, resource_type, logical_id, base) for v, logical_id in rows]
    return bundle


def _history_entry(v: ResourceVersionRow, resource_type: str, logical_id: str, base: str) -> dict[str, Any]:
    url = f"{base}/{resource_type}/{logical_id}"
    entry: dict[str, Any] = {"fullUrl": url}
    if not v.deleted:
        entry["resource"] = repo.loads(v.content)
    entry["request"] = {
        "method": v.method,
        "url": f"{resource_type}/{logical_id}" if v.method != "POST" else resource_type,
    }
    entry["response"] = {
        "status": "204 No Content" if v.deleted else ("201 Created" if v.version_id == 1 else "200 OK"),
        "etag": f'W/"{v.version_id}"',
        "lastModified": instant(v.last_updated),
    }
    return entry


def all_matches(session: Session, query: SearchQuery) -> list[repo.Stored]:
    """Every live match of a search (for conditional interactions), capped to keep the answer bounded.

    Conditional interactions only tell none, one and several apart; three lets the error say "3".
    """
    return repo.matches(session, query.resource_type, conditions(query.resource_type, query.filters), limit=3)


def search(session: Session, query: SearchQuery, base: str, params: list[tuple[str, str]]) -> dict[str, Any]:
    total, rows = repo.search(
        session,
        query.resource_type,
        conditions(query.resource_type, query.filters),
        sort=query.sort,
        count=query.count,
        offset=query.offset,
    )
    kept = [(k, v) for k, v in params if k not in ("_offset", "_count")]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": total}
    bundle["link"] = _links(
        f"{base}/{query.resource_type}", kept, count=query.count, offset=query.offset, total=total
    )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base}/{row.resource_type}/{row.logical_id}",
            "resource": repo.loads(row.content),
            "search": {"mode": "match"},
        }
        for row in rows
    ]
    if query.warnings:
        entries.append({"resource": operation_outcome(query.warnings), "search": {"mode": "outcome"}})
    bundle["entry"] = entries
    return bundle


def _links(
    url: str, params: list[tuple[str, str]], *, count: int, offset: int, total: int
) -> list[dict[str, str]]:
    def page(at: int) -> str:
        return f"{url}?{urlencode([*params, ('_count', str(count)), ('_offset', str(at))])}"

    links = [{"relation": "self", "url": page(offset)}]
    if offset + count < total:
        links.append({"relation": "next", "url": page(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": page(max(0, offset - count))})
    return links


def entry_get(session: Session, entry: Entry, base: str = "") -> EntryOutcome:
    """A GET inside a bundle: a read (`Type/id`) or a search (`Type?...`)."""
    try:
        if entry.logical_id is not None:
            found = read(session, entry.resource_type, entry.logical_id)
            return EntryOutcome(
                200,
                etag=f'W/"{found.version_id}"',
                last_modified=found.last_updated,
                resource=found.content,
                location=f"{entry.resource_type}/{entry.logical_id}/_history/{found.version_id}",
                is_read=True,
            )
        params = entry.query or []
        bundle = search(session, parse_search(entry.resource_type, params), base, params)
        return EntryOutcome(200, resource=bundle, is_read=True)
    except FhirError as exc:
        raise exc.prefixed(f"{entry.path}.request.url") from None
