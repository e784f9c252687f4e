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

from app.db.engine import Database
from app.fhir.bundle import Entry, EntryOutcome, entry_response, parse_bundle, response_bundle
from app.fhir.outcome import FhirError, Issue
from app.services.writes import ResourceCheck, Run, apply_entries

T = TypeVar("T")
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
            if attempt == retries or not _is_race(exc):
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
    db: Database, data: Any, *, max_entries: int, retries: int, checks: tuple[ResourceCheck, ...], prefer: str
) -> dict[str, Any]:
    bundle_type, entries = parse_bundle(data, max_entries=max_entries)
    if bundle_type == "transaction":
        outcomes = in_transaction(
            db, lambda s: apply_entries(Run(s, now_ms(), checks), entries), retries=retries
        )
    else:
        outcomes = [_batch_entry(db, entry, retries=retries, checks=checks) for entry in entries]
    return response_bundle(bundle_type, [entry_response(o, prefer=prefer) for o in outcomes])


def _batch_entry(
    db: Database, entry: Entry, *, retries: int, checks: tuple[ResourceCheck, ...]
) -> EntryOutcome:
    """A batch entry stands alone: its own transaction, its own status (http.html#brules)."""
    if entry.failure is not None:
        return EntryOutcome(entry.failure.status, issues=entry.failure.issues)
    try:
        return in_transaction(
            db, lambda s: apply_entries(Run(s, now_ms(), checks), [entry])[0], retries=retries
        )
    except FhirError as exc:
        return EntryOutcome(exc.status, issues=exc.issues)


def write_one(db: Database, entry: Entry, *, retries: int, checks: tuple[ResourceCheck, ...]) -> EntryOutcome:
    """A single RESTful write is a one-entry transaction; errors are reported at the resource's own paths."""
    try:
        return in_transaction(
            db, lambda s: apply_entries(Run(s, now_ms(), checks), [entry])[0], retries=retries
        )
    except FhirError as exc:
        raise _unprefixed(exc, entry) from None


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
