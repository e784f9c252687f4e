"""Bulk import of FHIR NDJSON (one resource per line), through the same write path as ingest.

Each line is parsed and validated alone (app/fhir/resources.py, the same checks as the /fhir routes and the
protocol's), so a bad line is rejected with its line number and an OperationOutcome whose paths start at
the resource (`Observation.valueQuantity.code`) and the rest go on. Valid lines are written CHUNK lines to
a transaction through `apply_entries`, the batched write path of bundles:

- a line with an `id` is an update-or-create of `Type/id` (ids are kept, so references between lines and
  an export's files stay valid); a line without one is a create that lands on the resource already
  holding its business identifiers, if any (natural key, as in ingest). Either way re-importing a file
  stores nothing new, a changed resource becomes a new version (an amendment, or `entered-in-error`,
  which withdraws a result as in ingest), and an identifier already held by a resource of another id is
  a 409 for that line.
- Bundle lines are refused: an NDJSON import holds resources; bundles go to POST /fhir, or `mrdhub import`.
- The token needs create and update scope for each line's type; a site's client writes only its own
  patients' data (checked after the writes, inside the transaction, as ingest does). A line refused by a
  chunk's transaction is taken out and the rest of the chunk is written again (halving the chunk when
  the culprit cannot be named or several are).
- A line whose reference names a resource that does not exist yet is put aside and tried again after the
  rest (up to ROUNDS times), so a file need not be in dependency order.
- Each chunk's transaction records one AuditEvent (the client, the patients concerned) and one Provenance
  whose targets are the resources the chunk created or changed, as a bundle's does.

Memory stays flat: the file is read line by line, at most one chunk is held, and the report keeps the
first MAX_REPORTED rejections (with the count of all).
"""

import functools
import multiprocessing
import re
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from app import metrics
from app.db import repository as repo
from app.db.engine import Database
from app.db.sites import outside_site
from app.domain.access import Permission, Principal
from app.fhir.bundle import Entry, EntryOutcome
from app.fhir.outcome import FhirError, Issue, operation_outcome
from app.fhir.resources import MAX_STRING_CHARS, parse_json, validate_resource
from app.services import audit
from app.services.ingest import in_transaction, now_ms
from app.services.writes import Resource, ResourceCheck, Run, apply_entries

CHUNK = 500
ANALYZE_AFTER = 10_000  # resources written by one import after which planner statistics are refreshed
VALIDATION_BATCH = 250  # lines sent to a validating process at once
ROUNDS = 5  # passes over lines put aside for a reference not yet written
MAX_REPORTED = 1000
MAX_LINE_BYTES = 10 * 1024 * 1024
ENTRY_PATH = re.compile(r"^Bundle\.entry\[(\d+)\](?:\.resource)?")
JOB_SYSTEM = "urn:mrdhub:job"


@dataclass
class Line:
    """A valid line, ready to be written."""

    number: int
    resource_type: str
    resource: dict[str, Any]
    warnings: int = 0


@dataclass
class Progress:
    lines: int = 0
    bytes_read: int = 0
    bytes_total: int | None = None
    accepted: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    warnings: int = 0
    put_aside: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_json(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "lines_read": self.lines,
            "bytes_read": self.bytes_read,
            "bytes_total": self.bytes_total,
            "resources_accepted": self.accepted,
            "resources_created": self.created,
            "resources_updated": self.updated,
            "resources_unchanged": self.unchanged,
            "resources_rejected": self.rejected,
            "warnings": self.warnings,
            "waiting_for_references": self.put_aside,
            "elapsed_s": round(elapsed, 3),
            "resources_per_s": round(self.accepted / elapsed, 1) if elapsed > 0 else None,
        }


@dataclass
class Report:
    """What the job answers: counters, and each rejected line with its OperationOutcome."""

    progress: Progress = field(default_factory=Progress)
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, number: int, issues: list[Issue]) -> None:
        self.progress.rejected += 1
        metrics.resources_rejected(issues[0].code if issues else "exception")
        if len(self.rejections) < MAX_REPORTED:
            self.rejections.append({"line": number, "outcome": operation_outcome(issues)})

    def as_json(self) -> dict[str, Any]:
        return {
            "rejected": self.rejections,
            "rejected_total": self.progress.rejected,
            "truncated": self.progress.rejected > len(self.rejections),
        }


class Cancelled(Exception):
    """The job was deleted while it ran."""


@dataclass
class Importer:
    db: Database
    principal: Principal
    checks: tuple[ResourceCheck, ...]
    retries: int
    job_id: str | None = None
    # Called after each chunk with the report; returns False to stop (the job was cancelled).
    on_progress: Callable[[Report], bool] | None = None
    chunk_size: int = CHUNK
    workers: int = 0  # processes validating lines beside the writing thread (0: validate in the thread)
    report: Report = field(default_factory=Report)
    _last_beat: float = field(default=0.0, init=False)

    def run(self, source: IO[bytes], *, size: int | None = None) -> Report:
        """Import every line of the binary stream; returns the report (rejections do not raise)."""
        progress = self.report.progress
        progress.bytes_total = size
        aside = tempfile.TemporaryFile()  # noqa: SIM115 (replaced by the next round's; closed below)
        try:
            self._pass(self._read(source), aside, defer=True)
            rounds = 0
            while progress.put_aside:
                rounds += 1
                before = progress.accepted
                waiting, aside = aside, tempfile.TemporaryFile()  # noqa: SIM115
                progress.put_aside = 0
                with waiting:
                    waiting.seek(0)
                    self._pass((_unpack(raw)[0] for raw in waiting), aside, defer=rounds < ROUNDS)
                if progress.accepted == before:
                    break  # nothing more was written: what is missing will not appear
            aside.seek(0)
            for raw in aside:
                line, issues = _unpack(raw)
                self.report.reject(line.number, _at_root(issues, line))
            progress.put_aside = 0
        finally:
            aside.close()
        self._beat(force=True)
        return self.report

    def _read(self, source: IO[bytes]) -> Iterator[Line]:
        """Valid lines, in file order; validation runs in `workers` processes when there are any."""
        raw_lines = self._raw_lines(source)
        if not self.workers:
            for number, raw in raw_lines:
                yield from self._admit(validate_lines([(number, raw)]))
            return
        context = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            in_flight: deque[Future[list[Validated]]] = deque()
            for batch in _batches(raw_lines, VALIDATION_BATCH):
                in_flight.append(pool.submit(validate_lines, batch))
                if len(in_flight) > 2 * self.workers:
                    yield from self._admit(in_flight.popleft().result())
            while in_flight:
                yield from self._admit(in_flight.popleft().result())

    def _raw_lines(self, source: IO[bytes]) -> Iterator[tuple[int, bytes]]:
        progress = self.report.progress
        number = 0
        while True:
            raw = source.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            progress.bytes_read += len(raw)
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the oversized line
                    raw = source.readline(MAX_LINE_BYTES)
                    progress.bytes_read += len(raw)
                progress.lines += 1
                self.report.reject(
                    number,
                    [Issue("error", "too-costly", f"Line longer than the limit of {MAX_LINE_BYTES} bytes")],
                )
                continue
            if not raw.strip():
                continue  # blank lines (a trailing newline) are not resources
            progress.lines += 1
            yield number, raw

    def _admit(self, validated: list["Validated"]) -> Iterator[Line]:
        """Valid lines the token may write and the protocol's checks accept; the others are rejected."""
        for number, resource_type, data, failure in validated:
            try:
                if failure is not None:
                    raise FhirError(400, [Issue(*f) for f in failure])
                assert resource_type is not None and data is not None
                for permission in (Permission.CREATE, Permission.UPDATE):
                    if not self.principal.may(resource_type, permission):
                        raise FhirError(
                            403,
                            [
                                Issue(
                                    "error",
                                    "forbidden",
                                    f"Scope system/{resource_type}.cu is required to import {resource_type}",
                                    (f"{resource_type}.resourceType",),
                                )
                            ],
                        )
                warnings = 0
                for check in self.checks:
                    warnings += len(check(data))
            except FhirError as exc:
                self.report.reject(number, exc.issues)
                continue
            yield Line(number, resource_type, data, warnings)

    def _pass(self, lines: Iterator[Line], aside: IO[bytes], *, defer: bool) -> None:
        chunk: list[Line] = []
        for line in lines:
            chunk.append(line)
            if len(chunk) >= self.chunk_size:
                self._commit(chunk, aside, defer=defer)
                chunk = []
                self._beat()
        if chunk:
            self._commit(chunk, aside, defer=defer)
            self._beat()

    def _beat(self, *, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_beat < 0.5:
            return
        self._last_beat = now
        if not self.on_progress(self.report):
            raise Cancelled

    def _commit(self, lines: list[Line], aside: IO[bytes], *, defer: bool) -> None:
        """Write the lines in one transaction; take out the lines it refuses and write the rest again."""
        pending = lines
        attempts = 0
        while pending:
            try:
                outcomes = in_transaction(
                    self.db, functools.partial(self._apply, lines=pending), retries=self.retries
                )
            except FhirError as exc:
                culprits = _culprits(exc, len(pending))
                attempts += 1
                if not culprits or (attempts >= 3 and len(pending) - len(culprits) > 1):
                    if not culprits and len(pending) == 1:
                        self.report.reject(pending[0].number, _at_root(exc.issues, pending[0]))
                        return
                    if culprits:
                        self._refused(pending, culprits, aside, defer=defer)
                        pending = [p for i, p in enumerate(pending) if i not in culprits]
                    half = len(pending) // 2
                    self._commit(pending[:half], aside, defer=defer)
                    self._commit(pending[half:], aside, defer=defer)
                    return
                self._refused(pending, culprits, aside, defer=defer)
                pending = [p for i, p in enumerate(pending) if i not in culprits]
                continue
            except DataError:
                if len(pending) == 1:
                    message = "A value cannot be stored: too long, out of range, or holding characters "
                    self.report.reject(
                        pending[0].number, [Issue("error", "value", message + "the database cannot keep")]
                    )
                    return
                half = len(pending) // 2
                self._commit(pending[:half], aside, defer=defer)
                self._commit(pending[half:], aside, defer=defer)
                return
            self._count(pending, outcomes)
            return

    def _refused(
        self, pending: list[Line], culprits: dict[int, list[Issue]], aside: IO[bytes], *, defer: bool
    ) -> None:
        for index, issues in culprits.items():
            line = pending[index]
            missing = all(i.code == "not-found" and i.diagnostics.startswith("Reference ") for i in issues)
            if defer and missing:
                aside.write(_pack(line, issues))
                self.report.progress.put_aside += 1
            else:
                self.report.reject(line.number, _at_root(issues, line))

    def _count(self, lines: list[Line], outcomes: list[tuple[EntryOutcome, bool]]) -> None:
        progress = self.report.progress
        for line, (outcome, changed) in zip(lines, outcomes, strict=True):
            progress.accepted += 1
            progress.warnings += line.warnings
            if not changed:
                progress.unchanged += 1
            elif outcome.status == 201:
                progress.created += 1
            else:
                progress.updated += 1
        for resource_type, n in Counter(line.resource_type for line in lines).items():
            metrics.resources_ingested(resource_type, n)

    def _apply(self, session: Session, *, lines: list[Line]) -> list[tuple[EntryOutcome, bool]]:
        """One chunk: the writes, the site guard, and the audit trail, in one transaction."""
        now = now_ms()
        run = Run(session, now)
        entries = [_entry(i, line) for i, line in enumerate(lines)]
        _known_ids(run, entries)
        outcomes = apply_entries(run, entries)
        refs = [(o.location or "").split("/_history/")[0] for o in outcomes]
        if self.principal.site is not None:
            _guard_site(session, entries, refs, self.principal.site)
        changed = _changed(outcomes, run.now_instant)
        written = [ref for ref, c in zip(refs, changed, strict=True) if c and ref]
        patients = audit.patients_in(o.resource for o in outcomes)
        what = f"bulk import{f' job {self.job_id}' if self.job_id else ''}"
        trail = [
            audit.audit_event(
                principal=self.principal,
                subtype="operation",
                outcome="0",
                recorded=now,
                description=f"{what}: lines {lines[0].number}-{lines[-1].number}, "
                f"{len(lines)} resources, {len(written)} created or changed",
                entities=patients,
            )
        ]
        if written:
            provenance = audit.provenance(
                principal=self.principal, targets=written, recorded=now, bundle_id=None
            )
            if self.job_id:
                source = {"identifier": {"system": JOB_SYSTEM, "value": self.job_id}}
                provenance["entity"] = [{"role": "source", "what": source}]
            trail.append(provenance)
        audit.store(session, now, *trail)
        return list(zip(outcomes, changed, strict=True))


# (line number, resource type, resource, failure as (severity, code, diagnostics, expression) tuples)
Validated = tuple[int, str | None, dict[str, Any] | None, list[tuple[Any, str, str, tuple[str, ...]]] | None]


def validate_lines(batch: list[tuple[int, bytes]]) -> list[Validated]:
    """Parse and validate lines alone, as the /fhir routes do; runs in a worker process for big imports
    (so only picklable values go in and out)."""
    validated: list[Validated] = []
    for number, raw in batch:
        try:
            data = parse_json(raw.strip(), max_string_chars=MAX_STRING_CHARS)
            resource_type = validate_resource(data)
            if resource_type == "Bundle":
                message = (
                    "A Bundle is not accepted in an NDJSON import (one resource per line); "
                    "send transaction bundles to POST /fhir"
                )
                raise FhirError(400, [Issue("error", "not-supported", message, ("Bundle.resourceType",))])
        except FhirError as exc:
            failure = [(i.severity, i.code, i.diagnostics, i.expression) for i in exc.issues]
            validated.append((number, None, None, failure))
            continue
        validated.append((number, resource_type, data, None))
    return validated


def _batches(items: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _changed(outcomes: list[EntryOutcome], now: str) -> list[bool]:
    """Whether each line made a new version (a second identical line of the chunk did not)."""
    seen: dict[str, str] = {}
    changed = []
    for outcome in outcomes:
        ref, _, version = (outcome.location or "").partition("/_history/")
        changed.append(outcome.last_modified == now and seen.get(ref) != version)
        seen[ref] = version
    return changed


def _entry(index: int, line: Line) -> Entry:
    logical_id = line.resource.get("id")
    return Entry(
        index=index,
        method="PUT" if isinstance(logical_id, str) else "POST",
        resource_type=line.resource_type,
        logical_id=logical_id if isinstance(logical_id, str) else None,
        resource=line.resource,
        path=f"Bundle.entry[{index}]",
    )


def _known_ids(run: Run, entries: list[Entry]) -> None:
    """The stored rows of every `Type/id` the chunk updates, in one query instead of one per line.

    Read without a row lock: two writers of one resource still meet at the unique (resource, version)
    constraint, and the loser's transaction is retried (app/services/ingest.py).
    """
    keys = {(e.resource_type, e.logical_id) for e in entries if e.logical_id is not None}
    stored = repo.get_many(run.session, keys)
    for resource_type, logical_id in keys:
        row = stored.get((resource_type, logical_id))
        # Not stored yet: known as new, as the write path would find it (update as create).
        run.resources[(resource_type, logical_id)] = (
            Resource(resource_type, logical_id)
            if row is None
            else Resource(
                resource_type,
                logical_id,
                pk=row.pk,
                version_id=row.version_id,
                last_updated=row.last_updated,
                deleted=row.deleted,
                text=row.content,
            )
        )


def _guard_site(session: Session, entries: list[Entry], refs: list[str], site: str) -> None:
    """Every line writing another site's patient data is refused at once (the chunk is written again)."""
    foreign = set(outside_site(session, sorted({r for r in refs if r}), site))
    issues = [
        Issue(
            "error",
            "not-found",
            f"{entry.resource_type} is not a {site} patient's data",
            (f"{entry.path}.resource",),
        )
        for entry, ref in zip(entries, refs, strict=True)
        if ref in foreign
    ]
    if issues:
        raise FhirError(404, issues)


def _culprits(exc: FhirError, size: int) -> dict[int, list[Issue]]:
    """The chunk's lines an error names (by their entry path), with their issues; {} if it names none."""
    found: dict[int, list[Issue]] = {}
    for issue in exc.issues:
        indexes = {int(m.group(1)) for e in issue.expression if (m := ENTRY_PATH.match(e))}
        if len(indexes) != 1:
            return {}
        index = indexes.pop()
        if index >= size:
            return {}
        found.setdefault(index, []).append(issue)
    return found


def _at_root(issues: list[Issue], line: Line) -> list[Issue]:
    """Paths from the resource (`Observation.subject.reference`), not from the chunk's entry."""
    return [
        Issue(
            i.severity,
            i.code,
            i.diagnostics,
            tuple(ENTRY_PATH.sub(line.resource_type, e, count=1) for e in i.expression),
        )
        for i in issues
    ]


def _pack(line: Line, issues: list[Issue]) -> bytes:
    """A line put aside, with why (one text line: JSON strings hold no raw newline)."""
    why = [[i.severity, i.code, i.diagnostics, list(i.expression)] for i in issues]
    return repo.dumps({"n": line.number, "w": line.warnings, "why": why, "r": line.resource}).encode() + b"\n"


def _unpack(raw: bytes) -> tuple[Line, list[Issue]]:
    packed = repo.loads(raw.decode())
    resource = packed["r"]
    issues = [Issue(s, c, d, tuple(e)) for s, c, d, e in packed["why"]]
    return Line(packed["n"], str(resource["resourceType"]), resource, packed["w"]), issues


def import_file(
    db: Database,
    path: Path,
    *,
    principal: Principal,
    checks: tuple[ResourceCheck, ...],
    retries: int,
    job_id: str | None = None,
    on_progress: Callable[[Report], bool] | None = None,
    chunk_size: int = CHUNK,
    workers: int = 0,
    analyze_after: int = ANALYZE_AFTER,
) -> Report:
    """Import an NDJSON file. With `workers`, lines are validated in that many spawned processes while
    this thread writes (validation is about a third of a line's cost here, the write path the rest); off
    by default: on the 2-core machine it was measured on, under load, it did not pay (bench/README.md).
    After `analyze_after` resources written, the store's planner statistics are refreshed."""
    size = path.stat().st_size
    importer = Importer(db, principal, checks, retries, job_id, on_progress, chunk_size, workers)
    with path.open("rb") as source:
        report = importer.run(source, size=size)
    if report.progress.created + report.progress.updated >= analyze_after:
        with db.transaction() as session:
            repo.refresh_statistics(session)
    return report
