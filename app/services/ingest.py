"""Use cases that write: a transaction or batch Bundle, or a single RESTful create/update/delete.

Each runs in one database transaction that is committed before the answer is built. Two senders racing
on the same natural key or version meet at a unique constraint; the loser's whole unit of work is
retried, and then finds the winner's resource, so each result is stored once.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from app import metrics
from app.db.engine import Database
from app.db.sites import outside_site
from app.domain.access import Permission, Principal, parse_scopes
from app.fhir.bundle import Entry, EntryOutcome, entry_response, parse_bundle, response_bundle
from app.fhir.outcome import FhirError, Issue
from app.services import audit
from app.services.writes import ResourceCheck, Run, apply_entries

T = TypeVar("T")
# The service's own writers (demo loader, trial-office use cases): every type, every site.
TRUSTED = Principal("mrdhub", parse_scopes("system/*.cruds"), None)
# Unique violation, serialization failure, deadlock: a race that a retry resolves.
RETRYABLE_SQLSTATES = {"23505", "40001", "40P01"}


def now_ms() -> datetime:
    """The server clock in naive UTC at millisecond precision, the precision of meta.lastUpdated."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def in_transaction(db: Database, work: Callable[[Session], T], *, retries: int) -> T:
    for attempt in range(retries + 1):
        try:
            with db.transaction() as session:
                return work(session)
        except DBAPIError as exc:
            if not _is_race(exc):
                raise
            if attempt == retries:
                if isinstance(exc, IntegrityError):
                    # Still a unique violation after every retry saw the winners' rows: not a race but two
                    # claims on one business identifier within this request (e.g. a POST and a PUT to
                    # another id). The request is in conflict with itself; nothing was written.
                    raise FhirError(
                        409,
                        [
                            Issue(
                                "error",
                                "conflict",
                                "Two entries claim the same business identifier for different resources",
                            )
                        ],
                    ) from None
                raise
    raise AssertionError("unreachable")


def _is_race(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError) and db_sqlstate(exc) is None:
        return True  # SQLite: writers are serialised, but stay safe
    return db_sqlstate(exc) in RETRYABLE_SQLSTATES


def db_sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def process_bundle(
    db: Database,
    data: Any,
    *,
    max_entries: int,
    retries: int,
    checks: tuple[ResourceCheck, ...],
    prefer: str,
    principal: Principal = TRUSTED,
) -> dict[str, Any]:
    try:
        bundle_type, entries = parse_bundle(data, max_entries=max_entries)
        if bundle_type == "transaction":
            for entry in entries:
                _permit(principal, entry)
            bundle_id = data.get("id") if isinstance(data.get("id"), str) else None
            outcomes = in_transaction(
                db, lambda s: _apply(s, entries, checks, principal, "transaction", bundle_id), retries=retries
            )
        else:
            outcomes = [
                _batch_entry(db, entry, retries=retries, checks=checks, principal=principal)
                for entry in entries
            ]
    except FhirError as exc:
        raw = data.get("entry") if isinstance(data, dict) else None
        _count_rejected(exc.issues, n=len(raw) if isinstance(raw, list) and raw else 1)
        raise
    for entry, outcome in zip(entries, outcomes, strict=True):
        _count(entry, outcome)
    return response_bundle(bundle_type, [entry_response(o, prefer=prefer) for o in outcomes])


def _count(entry: Entry, outcome: EntryOutcome) -> None:
    if outcome.status >= 400:
        _count_rejected(outcome.issues)
    elif entry.method in ("POST", "PUT"):
        metrics.resources_ingested(entry.resource_type)


def _count_rejected(issues: list[Issue], n: int = 1) -> None:
    reason = next((i.code for i in issues if i.severity in ("fatal", "error")), "unknown")
    metrics.resources_rejected(reason, n)


SUBTYPES = {"POST": "create", "PUT": "update", "DELETE": "delete", "GET": "read"}


def _apply(
    session: Session,
    entries: list[Entry],
    checks: tuple[ResourceCheck, ...],
    principal: Principal,
    subtype: str | None = None,
    bundle_id: str | None = None,
) -> list[EntryOutcome]:
    """The writes, the site guard, and the audit trail, all in one transaction."""
    now = now_ms()
    outcomes = apply_entries(Run(session, now, checks), entries)
    if principal.site is not None:
        _guard_site(session, entries, outcomes, principal.site)
    written = [
        o.location.split("/_history/")[0]
        for e, o in zip(entries, outcomes, strict=True)
        if o.location and e.method in ("POST", "PUT")
    ]
    touched = [o.location.split("/_history/")[0] for o in outcomes if o.location]
    kind = subtype or SUBTYPES[entries[0].method]
    patients = audit.patients_in(o.resource for o in outcomes)
    trail = [
        audit.audit_event(
            principal=principal,
            subtype=kind,
            outcome="0",
            recorded=now,
            description=f"{kind}: {len(entries)} entries",
            entities=[*touched, *patients],
        )
    ]
    if subtype in ("transaction", "batch") and written:
        trail.append(
            audit.provenance(principal=principal, targets=written, recorded=now, bundle_id=bundle_id)
        )
    audit.store(session, now, *trail)
    audit.mark_audited()
    return outcomes


def _permit(principal: Principal, entry: Entry) -> None:
    if entry.failure is not None:
        return
    permission = {
        "POST": Permission.CREATE,
        "PUT": Permission.UPDATE,
        "DELETE": Permission.DELETE,
        "GET": Permission.READ if entry.logical_id else Permission.SEARCH,
    }[entry.method]
    if not principal.may(entry.resource_type, permission):
        raise FhirError(
            403,
            [
                Issue(
                    "error",
                    "forbidden",
                    f"Scope system/{entry.resource_type}.{permission.value} is required",
                    (f"{entry.path}.request",),
                )
            ],
        )


def _guard_site(session: Session, entries: list[Entry], outcomes: list[EntryOutcome], site: str) -> None:
    """A site's client writes only its own patients' data; anything else undoes the whole unit of work.

    Checked after the writes, inside the transaction, so references resolved within the bundle count.
    """
    written = [
        (entry, outcome.location.split("/_history/")[0])
        for entry, outcome in zip(entries, outcomes, strict=True)
        if outcome.location and entry.method != "DELETE"
    ]
    foreign = set(outside_site(session, [ref for _, ref in written], site))
    for entry, ref in written:
        if ref in foreign:
            # Answered like a resource that does not exist: another site's data are not revealed.
            raise FhirError(
                404,
                [
                    Issue(
                        "error",
                        "not-found",
                        f"{entry.resource_type} is not a {site} patient's data",
                        (f"{entry.path}.resource",),
                    )
                ],
            )


def _batch_entry(
    db: Database, entry: Entry, *, retries: int, checks: tuple[ResourceCheck, ...], principal: Principal
) -> EntryOutcome:
    """A batch entry stands alone: its own transaction, its own status (http.html#brules)."""
    if entry.failure is not None:
        return EntryOutcome(entry.failure.status, issues=entry.failure.issues)
    try:
        _permit(principal, entry)
        return in_transaction(
            db, lambda s: _apply(s, [entry], checks, principal, "batch")[0], retries=retries
        )
    except FhirError as exc:
        return EntryOutcome(exc.status, issues=exc.issues)


def write_one(
    db: Database,
    entry: Entry,
    *,
    retries: int,
    checks: tuple[ResourceCheck, ...],
    principal: Principal = TRUSTED,
) -> EntryOutcome:
    """A single RESTful write is a one-entry transaction; errors are reported at the resource's own paths."""
    try:
        outcome = in_transaction(db, lambda s: _apply(s, [entry], checks, principal)[0], retries=retries)
    except FhirError as exc:
        _count_rejected(exc.issues)
        raise _unprefixed(exc, entry) from None
    _count(entry, outcome)
    return outcome


def _unprefixed(exc: FhirError, entry: Entry) -> FhirError:
    prefix = f"{entry.path}.resource"
    issues = [
        Issue(
            i.severity,
            i.code,
            i.diagnostics,
            tuple(
                e.replace(prefix, entry.resource_type, 1) if e.startswith(prefix) else e for e in i.expression
            ),
        )
        for i in exc.issues
    ]
    return FhirError(exc.status, issues, exc.headers)
