"""Ingest benchmark: 7-resource LIS bundles POSTed at c concurrent clients to mrdhub and to the naive
baseline (bench/naive_app.py), each a real uvicorn server on a fresh database, side by side with the floor.

    .venv/bin/python bench/ingest_http.py                       # PostgreSQL, 600 bundles x 3 rounds, c = 16
    .venv/bin/python bench/ingest_http.py --bundles 2000 --rounds 4 --workers 2
    .venv/bin/python bench/ingest_http.py --database sqlite --bundles 300
    .venv/bin/python bench/ingest_http.py --targets mrdhub,mrdhub:async-deps+threads=4   # an experiment, A/B
    .venv/bin/python bench/ingest_http.py --targets mrdhub --rounds 1 \
        --py-spy "py-spy record --rate 100 --format raw --gil --nonblocking --output /tmp/ingest.spy"
    .venv/bin/python bench/ingest_http.py --bundles 400 --profile 40   # cProfile of mrdhub, in-process

Every round sends the same bundles to each target in turn (the order rotates from round to round), each on
a fresh database (PostgreSQL: created through --admin-url, dropped afterwards; SQLite: a new file) with its
own server, then measures the floor: the same bundles through fhir.resources validation alone, in this
process. Printed as a table of medians over the rounds, with mrdhub/naive and mrdhub/floor (medians of the
per-round ratios, each round's targets having run back to back), and written with every round's figures to
bench/results/ingest_http_{database}_w{workers}.json. `--py-spy` samples mrdhub's server while it is
measured and prints where the samples fall, by stage (`stages`). Run by hand, never in tests;
bench/README.md says how to read the figures.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.fhir.resources import validate_resource  # noqa: E402

# The servers under test: the ASGI app factory, and the variable that gives it its database.
SERVERS = {
    "naive": ("bench.naive_app:create_app", "NAIVE_DATABASE_URL"),
    "mrdhub": ("app.main:create_app", "DATABASE_URL"),
}
NO_ANSWER = 999  # recorded as the status of a request whose connection broke before an answer
FIGURES = (
    "bundles_per_s",
    "resources_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "server_cpu_ms_per_bundle",
    "database_cpu_ms_per_bundle",
    "client_cpu_ms_per_bundle",
    "rollbacks",
)

CONCEPT = "urn:mrdhub:concept"


def lis_bundle(i: int) -> dict[str, Any]:
    """One lab report: patient (conditional), specimen, flow + NGS MRD, blast %, report, and the site."""
    site, mrn = f"SITE-{i % 4}", f"P{i // 3:07d}"  # three reports per patient, as in a lab's day
    subject = {"reference": "urn:uuid:patient"}
    quantity = {"unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}

    def observation(n: int, code: str, value: float) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "identifier": [{"system": "urn:bench:result", "value": f"R{i}-{n}"}],
            "status": "final",
            "code": {"coding": [{"system": CONCEPT, "code": code}]},
            "subject": subject,
            "effectiveDateTime": "2025-03-19T08:30:00+08:00",
            "valueQuantity": {"value": value, **quantity},
            "specimen": {"reference": "urn:uuid:specimen"},
        }

    resources: list[tuple[str, dict[str, Any], str | None]] = [
        (
            "urn:uuid:org",
            {
                "resourceType": "Organization",
                "identifier": [{"system": "urn:mrdhub:site", "value": site}],
                "name": site,
            },
            f"identifier=urn:mrdhub:site|{site}",
        ),
        (
            "urn:uuid:patient",
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:bench:mrn", "value": mrn}],
                "birthDate": "2016-05-12",
                "managingOrganization": {"reference": "urn:uuid:org"},
            },
            f"identifier=urn:bench:mrn|{mrn}",
        ),
        (
            "urn:uuid:specimen",
            {
                "resourceType": "Specimen",
                "identifier": [{"system": "urn:bench:specimen", "value": f"S{i}"}],
                "type": {"coding": [{"system": "http://snomed.info/sct", "code": "396997002"}]},
                "subject": subject,
                "collection": {"collectedDateTime": "2025-03-19T08:30:00+08:00"},
            },
            None,
        ),
        (f"urn:uuid:{uuid.UUID(int=i * 8 + 1)}", observation(1, "mrd-flow", 0.012 * (i % 7)), None),
        (f"urn:uuid:{uuid.UUID(int=i * 8 + 2)}", observation(2, "mrd-ngs", 0.0003 * (i % 5)), None),
        (f"urn:uuid:{uuid.UUID(int=i * 8 + 3)}", observation(3, "blast-percent", 1.5), None),
        (
            "urn:uuid:report",
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"text": "MRD"},
                "identifier": [{"system": "urn:bench:report", "value": f"D{i}"}],
                "subject": subject,
                "effectiveDateTime": "2025-03-19T08:30:00+08:00",
                "result": [{"reference": f"urn:uuid:{uuid.UUID(int=i * 8 + 1)}"}],
            },
            None,
        ),
    ]
    entries = []
    for full_url, resource, condition in resources:
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if condition:
            request["ifNoneExist"] = condition
        entries.append({"fullUrl": full_url, "resource": resource, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def validation_floor(bundles: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    for b in bundles:
        for e in b["entry"]:
            validate_resource(e["resource"])
    return len(bundles) / (time.perf_counter() - start)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def database_cpu_seconds(url: str) -> dict[int, float]:
    """CPU so far of each PostgreSQL backend serving `url`'s database, when the server is local (its
    processes are named `postgres: ... user database client state` in /proc); empty elsewhere."""
    if not url.startswith("postgresql"):
        return {}
    name = f" {url.rsplit('/', 1)[1]} "
    found: dict[int, float] = {}
    for d in os.listdir("/proc") if Path("/proc").is_dir() else ():
        if not d.isdigit():
            continue
        try:
            command = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if command.startswith("postgres:") and name in command:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                found[int(d)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    return found


def server_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and its descendants (uvicorn's workers), from /proc; None elsewhere."""
    if not Path(f"/proc/{pid}/stat").exists():
        return None
    stats: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stats[int(d)] = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue  # a process that ended meanwhile
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for p, stat in stats.items():
        fields = stat.rsplit(")", 1)[1].split()
        parents[p], ticks[p] = int(fields[1]), int(fields[11]) + int(fields[12])
    tree, grown = {pid}, True
    while grown:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= more
        grown = bool(more)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def rollbacks(url: str) -> int | None:
    """Transactions rolled back in the benchmark's database: on this workload, the units of work retried
    after losing a race on a natural key (PostgreSQL's statistics, which lag by up to a second)."""
    if not url.startswith("postgresql"):
        return None
    time.sleep(1.5)
    engine = create_engine(url)
    with engine.connect() as c:
        found = c.execute(
            text("SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()")
        ).scalar()
    engine.dispose()
    return int(found) if found is not None else None


def profile(url: str, bundles: list[dict[str, Any]], top: int) -> None:
    """The same bundles through `process_bundle` in this process, one after another, under cProfile:
    where the time of one ingest goes, without HTTP and without concurrency."""
    from sqlalchemy import event

    from app.db.engine import Database
    from app.services.ingest import process_bundle

    db = Database(url)
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(db.engine, "before_cursor_execute", count)
    warm, measured = bundles[:20], bundles[20:]
    for b in warm:
        process_bundle(db, b, max_entries=1000, retries=5, checks=(), prefer="minimal")
    statements = 0
    profiler = cProfile.Profile()
    start, cpu = time.perf_counter(), time.process_time()
    profiler.enable()
    for b in measured:
        process_bundle(db, b, max_entries=1000, retries=5, checks=(), prefer="minimal")
    profiler.disable()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    db.dispose()
    n = len(measured)
    print(
        f"in-process, sequential, under cProfile: {n / elapsed:.1f} bundles/s, "
        f"{elapsed / n * 1000:.1f} ms and {cpu / n * 1000:.1f} ms CPU per bundle, "
        f"{statements / n:.1f} SQL statements per bundle"
    )
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(r"/app/", top)


def fresh_database(admin_url: str, suffix: str = "") -> str:
    """A new, empty PostgreSQL database next to `admin_url`'s (also used by bench/queries.py)."""
    name = f"mrdhub_bench_{os.getpid()}{'_' + suffix if suffix else ''}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)"))
    engine.dispose()


class Databases:
    """A fresh database per target and round: PostgreSQL through the admin connection, or a SQLite file."""

    def __init__(self, kind: str, admin_url: str) -> None:
        self.kind, self.admin_url = kind, admin_url
        self.folder = Path(tempfile.mkdtemp(prefix="mrdhub-bench-")) if kind == "sqlite" else None

    def fresh(self, name: str) -> str:
        if self.folder is not None:
            return f"sqlite:///{self.folder / name}.sqlite3"
        return fresh_database(self.admin_url, name)

    def drop(self, url: str) -> None:
        if url.startswith("sqlite"):
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        else:
            drop_database(self.admin_url, url)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def server_of(target: str) -> tuple[str, str, dict[str, str]]:
    """(app factory, database variable, environment) of `naive`, `mrdhub` or `mrdhub:EXPERIMENTS`."""
    if target in SERVERS:
        return *SERVERS[target], {}
    base, _, experiments = target.partition(":")
    if base != "mrdhub" or not experiments:
        raise ValueError(f"unknown target {target!r}: naive, mrdhub or mrdhub:EXPERIMENT[+EXPERIMENT...]")
    return "bench.ingest_http:experiment_app", "DATABASE_URL", {"MRDHUB_EXPERIMENTS": experiments}


def server_env(target: str, url: str, extra: dict[str, str]) -> dict[str, str]:
    # mrdhub runs without token checks (as in bench/concurrency.py): the figures are ingest, as the naive
    # baseline's, which has no authorisation at all.
    _, variable, experiments = server_of(target)
    return {
        **os.environ,
        variable: url,
        "LOG_LEVEL": "WARNING",
        "ENVIRONMENT": "development",
        "AUTH_ENABLED": "false",
        **experiments,
        **extra,
    }


def experiment_app() -> Any:
    """mrdhub with the changes named in MRDHUB_EXPERIMENTS (`+`-separated), to measure a proposal side by
    side with the code as it is, without changing the code:

    - `async-deps`: the request dependencies get_settings/get_db/get_protocol as coroutines; as plain
      functions FastAPI runs each in the threadpool, two hand-offs per /fhir request before the real work;
    - `threads=N`: N threads (instead of 40) for the threadpool that runs the sync work;
    - `no-pre-ping`: no `SELECT 1` round trip at each connection checkout;
    - `no-audit-middleware`: without the audit middleware, a Starlette BaseHTTPMiddleware (an extra task and
      wrapped receive/send per request). On POST /fhir it records nothing itself (the transaction writes
      the AuditEvent), so this bounds what porting it to a plain ASGI middleware could save.
    """
    experiments = os.environ.get("MRDHUB_EXPERIMENTS", "").split("+")
    if "async-deps" in experiments:
        from app.api import deps

        async def get_settings(request: Any) -> Any:
            return request.app.state.settings

        async def get_db(request: Any) -> Any:
            return request.app.state.db

        async def get_protocol(request: Any) -> Any:
            return request.app.state.protocol

        # In place: the Depends(...) markers built at import hold these very function objects.
        for replacement in (get_settings, get_db, get_protocol):
            getattr(deps, replacement.__name__).__code__ = replacement.__code__
    if "no-pre-ping" in experiments:
        import sqlalchemy

        from app.db import engine

        def create_engine(*args: Any, **kwargs: Any) -> Any:
            return sqlalchemy.create_engine(*args, **{**kwargs, "pool_pre_ping": False})

        engine.create_engine = create_engine  # type: ignore[attr-defined]
    from app.main import create_app

    app = create_app()
    if "no-audit-middleware" in experiments:
        from starlette.middleware.base import BaseHTTPMiddleware

        app.user_middleware = [m for m in app.user_middleware if m.cls != BaseHTTPMiddleware]  # type: ignore[comparison-overlap]
    threads = next((int(e.split("=", 1)[1]) for e in experiments if e.startswith("threads=")), None)
    if threads is None:
        return app

    async def with_threads(scope: Any, receive: Any, send: Any) -> None:
        # The limiter belongs to the running event loop: set it from inside, on the first event.
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        await app(scope, receive, send)

    return with_threads


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        env=server_env("mrdhub", url, {}),
        check=True,
        stdout=subprocess.DEVNULL,
    )


async def send_all(base: str, bundles: list[bytes], concurrency: int) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    statuses: list[int] = []
    queue = list(reversed(bundles))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                try:
                    r = await client.post(
                        "/fhir", content=body, headers={"content-type": "application/fhir+json"}
                    )
                    statuses.append(r.status_code)
                except httpx.TransportError:
                    statuses.append(NO_ANSWER)  # the server dropped the connection (e.g. after a crash)
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed


def wait_until_up(server: subprocess.Popen[bytes], base: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} before answering")
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer {base}/healthz within {timeout_s} s")


# Where a sample of the server belongs: the first stage (in this order) that one of its frames matches.
# Frames are py-spy's `function (path:line)`.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("connection checkout + pre-ping", ("_ConnectionFairy._checkout", "do_ping")),
    ("COMMIT", ("Session.commit", "SessionTransaction.commit", "Connection.commit")),
    ("ROLLBACK (a lost race, retried)", ("rollback",)),
    ("fhir.resources validation", ("validate_resource (app/",)),
    ("body: read + JSON parse", ("read_fhir_json (app/", "parse_json (app/")),
    ("natural-key lookup", ("_look_up_natural_keys (app/",)),
    ("reference checks", ("_check_references (app/", "_resolve_references (app/")),
    ("derived rows: invalidate", ("invalidate (app/db/derived.py",)),
    ("INSERT versions, identifiers, search values", ("_flush (app/services/writes.py",)),
    ("audit event + provenance", ("(app/services/audit.py",)),
    ("site guard", ("_guard_site (app/",)),
    ("rest of apply_entries", ("apply_entries (app/",)),
    ("response bundle", ("response_bundle (app/", "entry_response (app/", "fhir_response (app/")),
    ("rest of process_bundle", ("process_bundle (app/",)),
    ("threadpool hand-off (run_in_threadpool)", ("run_in_threadpool", "WorkerThread.run")),
    ("dependencies (FastAPI)", ("solve_dependencies",)),
)
# The rest by the innermost frame that one of these matches: the layer the interpreter was in.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "middleware: request log, metrics, audit, limits",
        ("(app/observability.py", "(app/metrics.py", "(app/api/audit.py", "(app/api/limits.py"),
    ),
    ("HTTP server (uvicorn, h11)", ("(uvicorn/", "(h11/", "(httptools/")),
    ("routing (Starlette, FastAPI)", ("(starlette/", "(fastapi/")),
    ("event loop (asyncio)", ("(asyncio/",)),
)
LEAF_PACKAGES = {
    "fhir_core": "pydantic",
    "pydantic_core": "pydantic",
    "h11": "uvicorn",
    "httptools": "uvicorn",
}


def stages(path: Path, *, rate_hz: float | None = None, bundles: int | None = None) -> str:
    """py-spy's collapsed stacks (`--format raw`) summed by stage and by the package of the leaf frame."""
    by_stage: dict[str, int] = {}
    by_leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n, frames = int(count), stack.split(";")
        total += n
        stage = next((name for name, marks in STAGES if any(m in f for f in frames for m in marks)), None)
        if stage is None:
            stage = next(
                (name for f in reversed(frames) for name, marks in LAYERS if any(m in f for m in marks)),
                "other",
            )
        by_stage[stage] = by_stage.get(stage, 0) + n
        where = frames[-1].rpartition("(")[2]
        package = where.split("/", 1)[0] if "/" in where else where.split(".py", 1)[0]
        package = LEAF_PACKAGES.get(package, package)
        by_leaf[package] = by_leaf.get(package, 0) + n

    def rows(counts: dict[str, int], limit: int) -> list[str]:
        lines = []
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]:
            ms = f" | {n / rate_hz * 1000 / bundles:.2f}" if rate_hz and bundles else ""
            lines.append(f"| {name} | {n} | {100 * n / total:.1f}%{ms} |")
        return lines

    unit = " | ms per bundle" if rate_hz and bundles else ""
    return "\n".join(
        [
            f"{total} samples in {path}",
            f"| stage | samples | share{unit} |",
            "|---|---|---|" + ("---|" if unit else ""),
            *rows(by_stage, len(STAGES) + len(LAYERS) + 1),
            "",
            f"| package of the innermost frame | samples | share{unit} |",
            "|---|---|---|" + ("---|" if unit else ""),
            *rows(by_leaf, 12),
        ]
    )


def start_py_spy(command: list[str], pid: int, workers: int) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (and its workers) in collapsed-stack form, for `stages` to read."""
    flags = ["--subprocesses"] if workers > 1 else []
    spy = subprocess.Popen([*command, "--pid", str(pid), *flags], stdout=subprocess.DEVNULL)
    time.sleep(1)  # attached before the measured bundles go
    return spy


def _option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command[:-1] else None


def run_target(
    target: str,
    payloads: list[bytes],
    url: str,
    *,
    concurrency: int,
    workers: int,
    extra_env: dict[str, str],
    py_spy: list[str] | None = None,
) -> dict[str, Any]:
    """Starts the target's uvicorn on `url`, warms it with the first 5% of the bundles, times the rest."""
    factory, _, _ = server_of(target)
    if target == "naive":
        subprocess.run([sys.executable, "-m", "bench.naive_app", url], cwd=ROOT, check=True)
    else:
        migrate(url)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            factory,
            "--factory",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=server_env(target, url, extra_env),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(server, base)
        warm = max(1, len(payloads) // 20)
        asyncio.run(send_all(base, payloads[:warm], concurrency))
        spy = start_py_spy(py_spy, server.pid, workers) if py_spy and target != "naive" else None
        cpu_before = server_cpu_seconds(server.pid)
        db_before, client_before = database_cpu_seconds(url), time.process_time()
        latencies, statuses, elapsed = asyncio.run(send_all(base, payloads[warm:], concurrency))
        cpu_after = server_cpu_seconds(server.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples when interrupted
            spy.wait(timeout=120)
            assert py_spy is not None
            output, rate = _option(py_spy, "--output"), _option(py_spy, "--rate")
            if output:
                n = len(payloads) - max(1, len(payloads) // 20)
                print(stages(Path(output), rate_hz=float(rate or 100), bundles=n), flush=True)
        db_after, client_cpu = database_cpu_seconds(url), time.process_time() - client_before
    finally:
        server.terminate()
        server.wait()
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100)
    return {
        "bundles": n,
        "bundles_per_s": round(n / elapsed, 1),
        "resources_per_s": round(7 * n / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "errors": sum(1 for s in statuses if s != 200),
        "status_5xx": sum(1 for s in statuses if 500 <= s < NO_ANSWER),
        "no_answer": statuses.count(NO_ANSWER),
        # CPU of the server process (and its workers) per bundle: less noisy than wall time on a busy box.
        "server_cpu_ms_per_bundle": (
            round((cpu_after - cpu_before) * 1000 / n, 2)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
        # PostgreSQL's backends for this database (a backend that ended meanwhile is missed) and the
        # benchmark's own client: with the server's, the CPU that one bundle costs the machine.
        "database_cpu_ms_per_bundle": (
            round(sum(t - db_before.get(p, 0.0) for p, t in db_after.items()) * 1000 / n, 2)
            if db_after
            else None
        ),
        "client_cpu_ms_per_bundle": round(client_cpu * 1000 / n, 2),
        "rollbacks": rollbacks(url),
    }


def summarise(rounds: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    """Medians over the rounds; ratios are medians of each round's ratio (its targets ran back to back)."""
    summary: dict[str, Any] = {}
    for target in [*targets, "floor"]:
        runs = [r[target] for r in rounds]
        figures: dict[str, Any] = {}
        for key in FIGURES:
            values = [run[key] for run in runs if run.get(key) is not None]
            if values:
                figures[key] = round(statistics.median(values), 2)
        rates = [run["bundles_per_s"] for run in runs]
        figures["bundles_per_s_range"] = [min(rates), max(rates)]
        if target != "floor":
            figures["errors"] = sum(run["errors"] for run in runs)
            figures["status_5xx"] = sum(run["status_5xx"] for run in runs)
            figures["no_answer"] = sum(run["no_answer"] for run in runs)
        summary[target] = figures
    ratios: dict[str, Any] = {}
    for target in targets:
        # A variant (mrdhub:EXPERIMENT) is compared with mrdhub as it is, too.
        bases = ("naive", "floor", "mrdhub") if target.startswith("mrdhub:") else ("naive", "floor")
        for base in bases:
            if target == base or base not in rounds[0]:
                continue
            per_round = [r[target]["bundles_per_s"] / r[base]["bundles_per_s"] for r in rounds]
            ratios[f"{target}/{base}"] = {
                "median": round(statistics.median(per_round), 3),
                "rounds": [round(x, 3) for x in per_round],
            }
    summary["ratios"] = ratios
    return summary


def table(summary: dict[str, Any], targets: list[str]) -> str:
    head = (
        "| | bundles/s (range) | resources/s | p50 ms | p95 ms | p99 ms | errors | 5xx | no answer "
        "| CPU ms/bundle: server, PostgreSQL | rollbacks |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for target in targets:
        s = summary[target]
        low, high = s["bundles_per_s_range"]
        lines.append(
            f"| {target} | {s['bundles_per_s']} ({low}-{high}) | {s['resources_per_s']} | {s['p50_ms']} "
            f"| {s['p95_ms']} | {s['p99_ms']} | {s['errors']} | {s['status_5xx']} | {s['no_answer']} "
            f"| {s.get('server_cpu_ms_per_bundle', '-')}, {s.get('database_cpu_ms_per_bundle', '-')} "
            f"| {s.get('rollbacks', '-')} |"
        )
    floor = summary["floor"]
    low, high = floor["bundles_per_s_range"]
    lines.append(
        f"| floor (validation alone, in process) | {floor['bundles_per_s']} ({low}-{high}) "
        f"| {floor['resources_per_s']} | | | | | | | | |"
    )
    lines.append("")
    for name, ratio in summary["ratios"].items():
        lines.append(f"{name}: {ratio['median']} (rounds: {', '.join(map(str, ratio['rounds']))})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundles", type=int, default=600, help="per target and round (the first 5%% warm up)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--targets",
        default="naive,mrdhub",
        help="comma-separated: naive, mrdhub, mrdhub:EXPERIMENTS (see experiment_app)",
    )
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--out", type=Path, help="where to write the figures (default bench/results/)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the servers"
    )
    parser.add_argument(
        "--py-spy",
        metavar="COMMAND",
        help="sample mrdhub's server while it is measured, e.g. "
        "'py-spy record --rate 100 --format raw --gil --nonblocking --output bench/results/ingest.spy'",
    )
    parser.add_argument(
        "--profile", type=int, metavar="N", help="instead: profile mrdhub's ingest in-process, print N rows"
    )
    parser.add_argument("--stages", type=Path, metavar="FILE", help="instead: summarise a py-spy raw file")
    args = parser.parse_args()
    if args.stages:
        print(stages(args.stages))
        return
    targets = [t for t in args.targets.split(",") if t]
    for target in targets:
        try:
            server_of(target)
        except ValueError as exc:
            parser.error(str(exc))
    extra_env = dict(item.split("=", 1) for item in args.env)

    bundles = [lis_bundle(i) for i in range(args.bundles)]
    payloads = [json.dumps(b).encode() for b in bundles]
    databases = Databases(args.database, args.admin_url)
    try:
        if args.profile:
            url = databases.fresh("profile")
            try:
                migrate(url)
                profile(url, bundles, args.profile)
            finally:
                databases.drop(url)
            return
        rounds: list[dict[str, Any]] = []
        for number in range(args.rounds):
            order = targets[number % len(targets) :] + targets[: number % len(targets)]
            measured: dict[str, Any] = {}
            for target in order:
                url = databases.fresh(f"t{targets.index(target)}")
                try:
                    measured[target] = run_target(
                        target,
                        payloads,
                        url,
                        concurrency=args.concurrency,
                        workers=args.workers,
                        extra_env=extra_env,
                        py_spy=shlex.split(args.py_spy) if args.py_spy else None,
                    )
                finally:
                    databases.drop(url)
                print(
                    f"round {number + 1}/{args.rounds} {target}: {json.dumps(measured[target])}", flush=True
                )
            floor = validation_floor(bundles)
            measured["floor"] = {"bundles_per_s": round(floor, 1), "resources_per_s": round(7 * floor, 1)}
            print(f"round {number + 1}/{args.rounds} floor: {json.dumps(measured['floor'])}", flush=True)
            rounds.append(measured)
    finally:
        databases.close()
    summary = summarise(rounds, targets)
    result = {
        "benchmark": "ingest_http",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "database": args.database,
        "bundles_per_round": args.bundles,
        "resources_per_bundle": 7,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "server_env": extra_env,
        "load_average": os.getloadavg(),
        "summary": summary,
        "per_round": rounds,
    }
    print()
    print(
        f"ingest over HTTP: {args.database}, c = {args.concurrency}, {args.workers} worker(s), "
        f"{args.bundles} bundles x {args.rounds} rounds (medians)"
    )
    print(table(summary, targets))
    out = args.out or ROOT / "bench" / "results" / f"ingest_http_{args.database}_w{args.workers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
