"""FHIR write semantics on one open transaction: create, update, conditional forms, delete, references.

Every RESTful write, single or inside a bundle, goes through `apply_entries`, so a POST to /fhir/Patient
and the same POST inside a transaction behave alike (FHIR R4 http.html).
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session

from app.db import repository as repo
from app.db.tables import ResourceRow
from app.fhir.bundle import ORDER, Entry, EntryOutcome
from app.fhir.dates import instant
from app.fhir.outcome import FhirError, Issue, error
from app.fhir.references import iter_references, local_target, rewrite_references
from app.fhir.search import parse_search
from app.services import reads

# A check of one incoming resource: returns warnings, raises FhirError (paths from the resource root).
ResourceCheck = Callable[[dict[str, Any]], list[Issue]]


@dataclass
class Target:
    """Where a POST/PUT lands: an existing row, or a row allocated for a new resource."""

    row: ResourceRow
    is_new: bool
    keep_existing: bool = False  # conditional create that matched: answer with what is there


@dataclass
class Run:
    session: Session
    now: datetime
    checks: tuple[ResourceCheck, ...] = ()
    # Natural keys claimed by earlier entries of this run, not yet written: the same result twice in one
    # bundle lands once.
    claimed: dict[tuple[str, str, str], Target] = field(default_factory=dict)


def apply_entries(run: Run, entries: list[Entry]) -> list[EntryOutcome]:
    """All entries in one database transaction, in the spec's order; any FhirError aborts them all."""
    outcomes: dict[int, EntryOutcome] = {}
    warnings: dict[int, list[Issue]] = {}
    for entry in entries:
        if entry.resource is not None:
            warnings[entry.index] = _check(run, entry)
    ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
    targets: dict[int, Target] = {}
    aliases: dict[str, str] = {}
    for entry in ordered:
        if entry.method == "DELETE":
            outcomes[entry.index] = _delete(run, entry)
        elif entry.method in ("POST", "PUT"):
            target = _resolve_create(run, entry) if entry.method == "POST" else _resolve_update(run, entry)
            targets[entry.index] = target
            if entry.full_url:
                aliases[entry.full_url] = f"{entry.resource_type}/{target.row.logical_id}"
    written = {f"{e.resource_type}/{targets[e.index].row.logical_id}" for e in entries if e.index in targets}
    for entry in ordered:
        if entry.index in targets:
            assert entry.resource is not None
            content = copy.deepcopy(entry.resource)
            _resolve_references(run, entry, content, aliases, written)
            outcomes[entry.index] = _write(run, entry, targets[entry.index], content)
            outcomes[entry.index].issues.extend(warnings.get(entry.index, []))
    for entry in ordered:
        if entry.method == "GET":
            outcomes[entry.index] = reads.entry_get(run.session, entry)
    return [outcomes[e.index] for e in entries]


def _check(run: Run, entry: Entry) -> list[Issue]:
    assert entry.resource is not None
    found: list[Issue] = []
    for check in run.checks:
        try:
            found.extend(check(entry.resource))
        except FhirError as exc:
            raise exc.prefixed(f"{entry.path}.resource") from None
    return [
        Issue(
            i.severity,
            i.code,
            i.diagnostics,
            tuple(e.replace(entry.resource_type, f"{entry.path}.resource", 1) for e in i.expression),
        )
        for i in found
    ]


def _identifiers(resource: dict[str, Any]) -> list[tuple[str, str]]:
    raw = resource.get("identifier")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    return [
        (str(i.get("system") or ""), i["value"])
        for i in items
        if isinstance(i, dict) and isinstance(i.get("value"), str)
    ]


def _matches(run: Run, entry: Entry, query: list[tuple[str, str]], where: str) -> list[ResourceRow]:
    try:
        search = parse_search(entry.resource_type, query)
    except FhirError as exc:
        raise exc.prefixed(where) from None
    return reads.all_matches(run.session, search)


def _resolve_create(run: Run, entry: Entry) -> Target:
    assert entry.resource is not None
    if entry.if_none_exist:
        found = _matches(run, entry, parse_qsl(entry.if_none_exist), f"{entry.path}.request.ifNoneExist")
        if len(found) > 1:
            raise error(
                412,
                "multiple-matches",
                f"ifNoneExist '{entry.if_none_exist}' matches {len(found)} resources",
                f"{entry.path}.request.ifNoneExist",
            )
        if found:
            return Target(found[0], is_new=False, keep_existing=True)
    keys = [(entry.resource_type, s, v) for s, v in _identifiers(entry.resource)]
    for key in keys:
        if key in run.claimed:
            return run.claimed[key]
    natural = _natural_match(run, entry)
    target = (
        Target(natural, is_new=False)
        if natural is not None
        else Target(repo.allocate(run.session, entry.resource_type, None, run.now), is_new=True)
    )
    run.claimed.update(dict.fromkeys(keys, target))
    return target


def _natural_match(run: Run, entry: Entry, *, other_than: str | None = None) -> ResourceRow | None:
    """The live resource already holding this resource's business identifiers (the natural key)."""
    assert entry.resource is not None
    rows = repo.by_identifiers(run.session, entry.resource_type, _identifiers(entry.resource))
    if len(rows) > 1:
        ids = ", ".join(f"{r.resource_type}/{r.logical_id}" for r in rows)
        raise error(
            409,
            "conflict",
            f"The identifiers belong to different resources: {ids}",
            f"{entry.path}.resource.identifier",
        )
    if rows and other_than is not None and rows[0].logical_id != other_than:
        raise error(
            409,
            "conflict",
            f"Identifier already belongs to {entry.resource_type}/{rows[0].logical_id}",
            f"{entry.path}.resource.identifier",
        )
    return rows[0] if rows else None


def _resolve_update(run: Run, entry: Entry) -> Target:
    assert entry.resource is not None
    body_id = entry.resource.get("id")
    if entry.query is not None:
        found = _matches(run, entry, entry.query, f"{entry.path}.request.url")
        if len(found) > 1:
            raise error(
                412,
                "multiple-matches",
                f"Conditional update matches {len(found)} resources",
                f"{entry.path}.request.url",
            )
        if found:
            row = found[0]
            if body_id is not None and body_id != row.logical_id:
                raise error(
                    400,
                    "invalid",
                    f"Resource id '{body_id}' differs from the match {row.logical_id}",
                    f"{entry.path}.resource.id",
                )
            _natural_match(run, entry, other_than=row.logical_id)
            return _guard_version(entry, Target(row, is_new=False))
        natural = _natural_match(run, entry)
        if natural is not None:
            return Target(natural, is_new=False)
        return Target(repo.allocate(run.session, entry.resource_type, body_id, run.now), is_new=True)
    assert entry.logical_id is not None
    if body_id != entry.logical_id:
        raise error(
            400,
            "invalid",
            f"Resource id {body_id!r} must equal the id in the URL '{entry.logical_id}'",
            f"{entry.path}.resource.id",
        )
    _natural_match(run, entry, other_than=entry.logical_id)
    existing = repo.get(run.session, entry.resource_type, entry.logical_id, for_update=True)
    if existing is None:
        # Update as create: the client chose the id (http.html#upsert).
        return _guard_version(
            entry, Target(repo.allocate(run.session, entry.resource_type, entry.logical_id, run.now), True)
        )
    return _guard_version(entry, Target(existing, is_new=False))


def _guard_version(entry: Entry, target: Target) -> Target:
    if entry.if_match is not None:
        wanted = entry.if_match.removeprefix("W/").strip('"')
        if target.is_new or str(target.row.version_id) != wanted:
            current = "none" if target.is_new else f'W/"{target.row.version_id}"'
            raise error(
                412,
                "conflict",
                f"If-Match {entry.if_match} but the current version is {current}",
                f"{entry.path}.request.ifMatch",
            )
    return target


def _resolve_references(
    run: Run, entry: Entry, content: dict[str, Any], aliases: dict[str, str], written: set[str]
) -> None:
    """Rewrite bundle-internal and conditional references; every local reference must resolve."""
    failures: list[Issue] = []

    def replace(reference: str) -> str:
        if reference in aliases:
            return aliases[reference]
        if "?" in reference and not reference.startswith(("http:", "https:")):
            return _conditional_reference(run, entry, reference)
        return reference

    rewrite_references(content, replace)
    local: dict[tuple[str, str], str] = {}
    for path, reference in iter_references(content):
        where = path.replace(entry.resource_type, f"{entry.path}.resource", 1)
        if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
            failures.append(
                Issue(
                    "error",
                    "not-found",
                    f"{reference} is not the fullUrl of any entry in this bundle",
                    (where,),
                )
            )
            continue
        target = local_target(reference)
        if target is not None and f"{target[0]}/{target[1]}" not in written:
            local.setdefault(target, where)
    existing = repo.get_many(run.session, set(local))
    for key, where in local.items():
        row = existing.get(key)
        if row is None or row.deleted or row.version_id == 0:
            failures.append(
                Issue("error", "not-found", f"Reference {key[0]}/{key[1]} does not exist here", (where,))
            )
    if failures:
        raise FhirError(400, failures)


def _conditional_reference(run: Run, entry: Entry, reference: str) -> str:
    resource_type, _, query = reference.partition("?")
    found = reads.all_matches(run.session, parse_search(resource_type, parse_qsl(query)))
    if len(found) != 1:
        code = 412 if found else 400
        raise error(
            code,
            "not-found" if not found else "multiple-matches",
            f"Conditional reference {reference} matches {len(found)} resources",
            f"{entry.path}.resource",
        )
    return f"{resource_type}/{found[0].logical_id}"


def _write(run: Run, entry: Entry, target: Target, content: dict[str, Any]) -> EntryOutcome:
    row = target.row
    if target.keep_existing:
        return _answer(200, row, repo.loads(row.content))
    content = _with_server_fields(content, row.logical_id)
    if not target.is_new and not row.deleted and _same(repo.loads(row.content), content):
        return _answer(200, row, repo.loads(row.content))
    meta = dict(content.get("meta") or {})
    meta["versionId"] = str(row.version_id + 1)
    meta["lastUpdated"] = instant(run.now)
    rest = {k: v for k, v in content.items() if k not in ("resourceType", "id", "meta")}
    content = {"resourceType": content["resourceType"], "id": content["id"], "meta": meta, **rest}
    created = target.is_new or row.deleted
    repo.write_version(run.session, row, content, method=entry.method, now=run.now)
    return _answer(201 if created else 200, row, content)


def _with_server_fields(content: dict[str, Any], logical_id: str | None) -> dict[str, Any]:
    """The server's id (and later meta) first, as FHIR servers conventionally render them."""
    rest = {k: v for k, v in content.items() if k not in ("resourceType", "id")}
    return {"resourceType": content["resourceType"], "id": logical_id, **rest}


def _same(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Equal apart from the server's meta: a re-sent result is not a new version."""
    return _without_server_meta(stored) == _without_server_meta(incoming)


def _without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    stripped = dict(resource)
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    stripped.pop("meta", None)
    if meta:
        stripped["meta"] = meta
    return stripped


def _delete(run: Run, entry: Entry) -> EntryOutcome:
    rows: list[ResourceRow]
    if entry.query is not None:
        rows = _matches(run, entry, entry.query, f"{entry.path}.request.url")
        if len(rows) > 1:
            raise error(
                412,
                "multiple-matches",
                f"Conditional delete matches {len(rows)} resources",
                f"{entry.path}.request.url",
            )
    else:
        assert entry.logical_id is not None
        row = repo.get(run.session, entry.resource_type, entry.logical_id, for_update=True)
        rows = [row] if row is not None else []
    if not rows or rows[0].deleted or rows[0].version_id == 0:
        if entry.if_match is not None:
            raise error(
                412, "conflict", "If-Match on a resource that does not exist", f"{entry.path}.request.ifMatch"
            )
        return EntryOutcome(204)  # deleting what is not there succeeds (http.html#delete)
    target = _guard_version(entry, Target(rows[0], is_new=False))
    repo.write_version(run.session, target.row, None, method="DELETE", now=run.now)
    return EntryOutcome(204, etag=f'W/"{target.row.version_id}"', location=_location(target.row))


def _location(row: ResourceRow) -> str:
    return f"{row.resource_type}/{row.logical_id}/_history/{row.version_id}"


def _answer(status: int, row: ResourceRow, content: dict[str, Any]) -> EntryOutcome:
    return EntryOutcome(
        status,
        location=_location(row),
        etag=f'W/"{row.version_id}"',
        last_modified=instant(row.last_updated),
        resource=content,
    )
