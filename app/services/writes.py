"""FHIR write semantics on one open transaction: create, update, conditional forms, delete, references.

Every RESTful write, single or inside a bundle, goes through `apply_entries`, so a POST to /fhir/Patient
and the same POST inside a transaction behave alike (FHIR R4 http.html).

A bundle is applied in stages so that its database work does not grow with its entries: the natural keys
of all its writes are looked up in one query, new resources get their server id without a round trip,
the local references of all entries are checked in one query, and the versions are written in one batch.
Each stage answers exactly what the entry-by-entry order of the spec would: resolution sees the store as
the DELETEs left it, and a conditional reference or a GET sees the writes of the entries before it.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session

from app.db import repository as repo
from app.fhir.bundle import ORDER, Entry, EntryOutcome
from app.fhir.dates import instant
from app.fhir.outcome import FhirError, Issue, error
from app.fhir.references import iter_references, local_target, rewrite_references
from app.fhir.search import SearchQuery, TokenValue, parse_search
from app.services import reads

# A check of one incoming resource: returns warnings, raises FhirError (paths from the resource root).
ResourceCheck = Callable[[dict[str, Any]], list[Issue]]
NaturalKey = tuple[str, str, str]  # (resource type, identifier system, identifier value)


@dataclass
class Resource:
    """One resource as this run sees it: what is stored, plus the version this run has queued for it."""

    resource_type: str
    logical_id: str
    pk: int | None = None  # None until its row is inserted
    version_id: int = 0  # 0: nothing stored yet
    last_updated: datetime = datetime.min
    deleted: bool = False
    text: str = ""
    parsed: dict[str, Any] | None = None
    queued: bool = False

    @property
    def is_new(self) -> bool:
        return self.version_id == 0

    def content(self) -> dict[str, Any]:
        if self.parsed is None:
            self.parsed = repo.loads(self.text)
        return self.parsed


@dataclass
class Target:
    """Where a POST/PUT lands."""

    resource: Resource
    keep_existing: bool = False  # conditional create that matched: answer with what is there


@dataclass
class Run:
    session: Session
    now: datetime
    checks: tuple[ResourceCheck, ...] = ()
    # Natural keys claimed by earlier entries of this run: the same result twice in one bundle lands once.
    claimed: dict[NaturalKey, Target] = field(default_factory=dict)
    # Every resource this run has touched, by (type, id): two entries on one resource share its state.
    resources: dict[tuple[str, str], Resource] = field(default_factory=dict)
    # Natural keys looked up by the current `apply_entries` (after its DELETEs, before its writes), with
    # the live resource holding each.
    natural: dict[NaturalKey, repo.Stored | None] = field(default_factory=dict)
    pending: list[tuple[Resource, repo.NewVersion]] = field(default_factory=list)
    now_instant: str = field(init=False)  # meta.lastUpdated of everything this run writes

    def __post_init__(self) -> None:
        self.now_instant = instant(self.now)

    def instant(self, moment: datetime) -> str:
        return self.now_instant if moment == self.now else instant(moment)

    # The server's own trail (AuditEvent, Provenance) may name resources that were just deleted.
    trusted: bool = False


def apply_entries(run: Run, entries: list[Entry]) -> list[EntryOutcome]:
    """All entries in one database transaction, in the spec's order; any FhirError aborts them all."""
    outcomes: dict[int, EntryOutcome] = {}
    warnings: dict[int, list[Issue]] = {}
    for entry in entries:
        if entry.resource is not None:
            warnings[entry.index] = _check(run, entry)
    ordered = sorted(entries, key=lambda e: (ORDER[e.method], e.index))
    for entry in ordered:
        if entry.method == "DELETE":
            outcomes[entry.index] = _delete(run, entry)
    writes = [e for e in ordered if e.method in ("POST", "PUT")]
    run.natural.clear()  # a run may apply several lists of entries: what an earlier one wrote counts
    _look_up_natural_keys(run, writes)
    targets: dict[int, Target] = {}
    aliases: dict[str, str] = {}
    for entry in writes:
        target = _resolve_create(run, entry) if entry.method == "POST" else _resolve_update(run, entry)
        targets[entry.index] = target
        if entry.full_url:
            aliases[entry.full_url] = _reference(target.resource)
    written = {_reference(t.resource) for t in targets.values()}
    unchecked: list[_References] = []
    for entry in writes:
        assert entry.resource is not None
        content = _copy(entry.resource)
        try:
            unchecked.append(_resolve_references(run, entry, content, aliases, written))
        except FhirError:
            _check_references(run, unchecked)  # an earlier entry's failure is reported first
            raise
        outcomes[entry.index] = _write(run, entry, targets[entry.index], content)
        outcomes[entry.index].issues.extend(warnings.get(entry.index, []))
    _check_references(run, unchecked)
    _flush(run)
    for entry in ordered:
        if entry.method == "GET":
            outcomes[entry.index] = reads.entry_get(run.session, entry)
    return [outcomes[e.index] for e in entries]


def _copy(value: Any) -> Any:
    """A copy of a JSON value, as deepcopy would make it, without deepcopy's bookkeeping."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


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


def _reference(resource: Resource) -> str:
    return f"{resource.resource_type}/{resource.logical_id}"


def _known(run: Run, stored: repo.Stored) -> Resource:
    """The run's view of a stored resource: the first one seen, so that later entries see earlier ones."""
    key = (stored.resource_type, stored.logical_id)
    if key not in run.resources:
        run.resources[key] = Resource(
            stored.resource_type,
            stored.logical_id,
            pk=stored.pk,
            version_id=stored.version_id,
            last_updated=stored.last_updated,
            deleted=stored.deleted,
            text=stored.content,
        )
    return run.resources[key]


def _new(run: Run, resource_type: str, logical_id: str) -> Resource:
    resource = Resource(resource_type, logical_id)
    run.resources[(resource_type, logical_id)] = resource
    return resource


def _server_id() -> str:
    """A new logical id, chosen without asking the database: 32 hex digits of a random UUID.

    Collision-free in practice; the unique (type, id) constraint remains the guard, and the unit of work
    is retried if it ever fires.
    """
    return uuid.uuid4().hex


def _identifiers(resource: dict[str, Any]) -> list[tuple[str, str]]:
    raw = resource.get("identifier")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    return [
        (str(i.get("system") or ""), i["value"])
        for i in items
        if isinstance(i, dict) and isinstance(i.get("value"), str)
    ]


def _natural_keys(entry: Entry) -> list[NaturalKey]:
    assert entry.resource is not None
    return [(entry.resource_type, s, v) for s, v in _identifiers(entry.resource)]


def _natural_key_search(search: SearchQuery) -> NaturalKey | None:
    """The natural key a search names, when it is nothing but `identifier=system|value`.

    Such a search matches exactly the live resource holding that identifier (the index and the natural
    key table hold the same identifiers), so it is answered from the bundle's one natural-key lookup.
    """
    if len(search.filters) != 1:
        return None
    f = search.filters[0]
    if f.name != "identifier" or f.kind != "token" or len(f.values) != 1:
        return None
    value = f.values[0]
    if not isinstance(value, TokenValue) or value.system is None or not value.code:
        return None
    return (search.resource_type, value.system, value.code)


def _if_none_exist(entry: Entry) -> SearchQuery:
    assert entry.if_none_exist is not None
    try:
        return parse_search(entry.resource_type, parse_qsl(entry.if_none_exist))
    except FhirError as exc:
        raise exc.prefixed(f"{entry.path}.request.ifNoneExist") from None


def _look_up_natural_keys(run: Run, writes: list[Entry]) -> None:
    """One query for the natural keys of every write, and of every `ifNoneExist=identifier=s|v`."""
    keys: set[NaturalKey] = set()
    for entry in writes:
        keys.update(_natural_keys(entry))
        if entry.method == "POST" and entry.if_none_exist:
            try:
                key = _natural_key_search(_if_none_exist(entry))
            except FhirError:
                continue  # reported when the entry is resolved, in its turn
            if key is not None:
                keys.add(key)
    _natural_rows(run, keys)


def _natural_rows(run: Run, keys: list[NaturalKey] | set[NaturalKey]) -> list[repo.Stored]:
    """The distinct live resources holding any of the keys, in store order."""
    missing = [k for k in keys if k not in run.natural]
    if missing:
        found = repo.by_natural_keys(run.session, missing)
        run.natural.update({k: found.get(k) for k in missing})
    rows = {s.pk: s for k in keys if (s := run.natural[k]) is not None}
    return [rows[pk] for pk in sorted(rows)]


def _matches(run: Run, entry: Entry, query: list[tuple[str, str]], where: str) -> list[repo.Stored]:
    try:
        search = parse_search(entry.resource_type, query)
    except FhirError as exc:
        raise exc.prefixed(where) from None
    return reads.all_matches(run.session, search)


def _resolve_create(run: Run, entry: Entry) -> Target:
    assert entry.resource is not None
    if entry.if_none_exist:
        search = _if_none_exist(entry)
        key = _natural_key_search(search)
        found = _natural_rows(run, [key]) if key else reads.all_matches(run.session, search)
        if len(found) > 1:
            raise error(
                412,
                "multiple-matches",
                f"ifNoneExist '{entry.if_none_exist}' matches {len(found)} resources",
                f"{entry.path}.request.ifNoneExist",
            )
        if found:
            return Target(_known(run, found[0]), keep_existing=True)
    keys = _natural_keys(entry)
    for key in keys:
        if key in run.claimed:
            return run.claimed[key]
    natural = _natural_match(run, entry)
    resource = _known(run, natural) if natural is not None else _new(run, entry.resource_type, _server_id())
    target = Target(resource)
    run.claimed.update(dict.fromkeys(keys, target))
    return target


def _natural_match(run: Run, entry: Entry, *, other_than: str | None = None) -> repo.Stored | None:
    """The live resource already holding this resource's business identifiers (the natural key)."""
    rows = _natural_rows(run, _natural_keys(entry))
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
            return _guard_version(entry, Target(_known(run, row)))
        natural = _natural_match(run, entry)
        if natural is not None:
            return Target(_known(run, natural))
        return Target(_new(run, entry.resource_type, body_id if isinstance(body_id, str) else _server_id()))
    assert entry.logical_id is not None
    if body_id != entry.logical_id:
        raise error(
            400,
            "invalid",
            f"Resource id {body_id!r} must equal the id in the URL '{entry.logical_id}'",
            f"{entry.path}.resource.id",
        )
    _natural_match(run, entry, other_than=entry.logical_id)
    resource = _by_id(run, entry.resource_type, entry.logical_id)
    if resource is None:
        # Update as create: the client chose the id (http.html#upsert).
        resource = _new(run, entry.resource_type, entry.logical_id)
    return _guard_version(entry, Target(resource))


def _by_id(run: Run, resource_type: str, logical_id: str) -> Resource | None:
    """The resource with this id, locked until the end of the transaction (an update reads, then writes)."""
    known = run.resources.get((resource_type, logical_id))
    if known is not None:
        return known
    stored = repo.get(run.session, resource_type, logical_id, for_update=True)
    return _known(run, stored) if stored is not None else None


def _guard_version(entry: Entry, target: Target) -> Target:
    if entry.if_match is not None:
        wanted = entry.if_match.removeprefix("W/").strip('"')
        resource = target.resource
        if resource.is_new or str(resource.version_id) != wanted:
            current = "none" if resource.is_new else f'W/"{resource.version_id}"'
            raise error(
                412,
                "conflict",
                f"If-Match {entry.if_match} but the current version is {current}",
                f"{entry.path}.request.ifMatch",
            )
    return target


@dataclass
class _References:
    """What one entry's references still need: local targets to find, and failures found so far."""

    failures: list[Issue]
    local: dict[tuple[str, str], str]  # (type, id) -> where it is referenced


def _resolve_references(
    run: Run, entry: Entry, content: dict[str, Any], aliases: dict[str, str], written: set[str]
) -> _References:
    """Rewrite bundle-internal and conditional references; collect the local ones to check."""

    def replace(reference: str) -> str:
        if reference in aliases:
            return aliases[reference]
        if "?" in reference and not reference.startswith(("http:", "https:")):
            return _conditional_reference(run, entry, reference)
        return reference

    rewrite_references(content, replace)
    checked = _References([], {})
    for path, reference in iter_references(content):
        where = path.replace(entry.resource_type, f"{entry.path}.resource", 1)
        if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
            checked.failures.append(
                Issue(
                    "error",
                    "not-found",
                    f"{reference} is not the fullUrl of any entry in this bundle",
                    (where,),
                )
            )
            continue
        target = local_target(reference)
        if target is None or f"{target[0]}/{target[1]}" in written:
            continue
        known = run.resources.get(target)
        if known is not None and not known.is_new and not known.deleted:
            continue  # live as this run saw or wrote it (a run may apply several lists of entries)
        checked.local.setdefault(target, where)
    return checked


def _check_references(run: Run, unchecked: list[_References]) -> None:
    """Every local reference must resolve: one query for all entries; the first entry failing raises."""
    if run.trusted:
        return
    wanted = {key for references in unchecked for key in references.local}
    existing = repo.get_many(run.session, wanted)
    for references in unchecked:
        failures = list(references.failures)
        for key, where in references.local.items():
            row = existing.get(key)
            if row is None or row.deleted or row.version_id == 0:
                failures.append(
                    Issue("error", "not-found", f"Reference {key[0]}/{key[1]} does not exist here", (where,))
                )
        if failures:
            raise FhirError(400, failures)
    unchecked.clear()


def _conditional_reference(run: Run, entry: Entry, reference: str) -> str:
    resource_type, _, query = reference.partition("?")
    search = parse_search(resource_type, parse_qsl(query))
    _flush(run)  # the search sees what the entries before this one wrote
    found = reads.all_matches(run.session, search)
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
    resource = target.resource
    if target.keep_existing:
        return _answer(run, 200, resource, resource.content())
    content = _with_server_fields(content, resource.logical_id)
    if not resource.is_new and not resource.deleted and _same(resource.content(), content):
        return _answer(run, 200, resource, resource.content())
    meta = dict(content.get("meta") or {})
    meta["versionId"] = str(resource.version_id + 1)
    meta["lastUpdated"] = run.now_instant
    rest = {k: v for k, v in content.items() if k not in ("resourceType", "id", "meta")}
    content = {"resourceType": content["resourceType"], "id": content["id"], "meta": meta, **rest}
    created = resource.is_new or resource.deleted
    _queue(run, resource, content, method=entry.method)
    return _answer(run, 201 if created else 200, resource, content)


def _queue(run: Run, resource: Resource, content: dict[str, Any] | None, *, method: str) -> None:
    """Make a new version current in the run's view; it reaches the database with the next flush."""
    if resource.queued:
        _flush(run)  # one version per resource per batch: a second one needs the first's row
    text = repo.dumps(content) if content is not None else resource.text
    version = repo.NewVersion(
        resource.pk,
        resource.resource_type,
        resource.logical_id,
        resource.version_id + 1,
        method,
        content,
        text,
    )
    resource.version_id += 1
    resource.last_updated = run.now
    resource.deleted = content is None
    resource.text, resource.parsed = text, content
    resource.queued = True
    run.pending.append((resource, version))


def _flush(run: Run) -> None:
    if not run.pending:
        return
    pks = repo.write_versions(run.session, [version for _, version in run.pending], now=run.now)
    for (resource, _), pk in zip(run.pending, pks, strict=True):
        resource.pk, resource.queued = pk, False
    run.pending.clear()


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
    resource: Resource | None
    if entry.query is not None:
        rows = _matches(run, entry, entry.query, f"{entry.path}.request.url")
        if len(rows) > 1:
            raise error(
                412,
                "multiple-matches",
                f"Conditional delete matches {len(rows)} resources",
                f"{entry.path}.request.url",
            )
        resource = _known(run, rows[0]) if rows else None
    else:
        assert entry.logical_id is not None
        resource = _by_id(run, entry.resource_type, entry.logical_id)
    if resource is None or resource.deleted or resource.is_new:
        if entry.if_match is not None:
            raise error(
                412, "conflict", "If-Match on a resource that does not exist", f"{entry.path}.request.ifMatch"
            )
        return EntryOutcome(204)  # deleting what is not there succeeds (http.html#delete)
    _guard_version(entry, Target(resource))
    _queue(run, resource, None, method="DELETE")
    _flush(run)  # the writes after the DELETEs look up natural keys the deletion may have freed
    return EntryOutcome(204, etag=f'W/"{resource.version_id}"', location=_location(resource))


def _location(resource: Resource) -> str:
    return f"{resource.resource_type}/{resource.logical_id}/_history/{resource.version_id}"


def _answer(run: Run, status: int, resource: Resource, content: dict[str, Any]) -> EntryOutcome:
    return EntryOutcome(
        status,
        location=_location(resource),
        etag=f'W/"{resource.version_id}"',
        last_modified=run.instant(resource.last_updated),
        resource=content,
    )
