"""Ingest benchmark: 7-resource LIS bundles POSTed to a real uvicorn server, c concurrent clients.

    .venv/bin/python bench/ingest_http.py --bundles 2000 --concurrency 16 [--workers 2] [--database-url URL]
    .venv/bin/python bench/ingest_http.py --bundles 400 --profile 40

Starts uvicorn (one worker by default) on a free loopback port against a fresh database (PostgreSQL by
default, dropped afterwards), sends the bundles, and prints bundles/s, resources/s, latency percentiles and
the server's CPU per bundle; alongside, the floor: the same bundles through fhir.resources validation
alone, in this process. `--profile` runs the ingest in-process under cProfile instead. Run by hand, never
in tests; figures and how to read them are in bench/README.md.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.fhir.resources import validate_resource  # noqa: E402

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

    resources = [
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


def fresh_database(admin_url: str) -> str:
    name = f"mrdhub_bench_{os.getpid()}"
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


async def send_all(base: str, bundles: list[bytes], concurrency: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(bundles))
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                r = await client.post(
                    "/fhir", content=body, headers={"content-type": "application/fhir+json"}
                )
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundles", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--database-url", help="use this database instead of a fresh PostgreSQL one")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the fresh database")
    parser.add_argument("--out", type=Path, help="where to write the figures (default bench/results/)")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="instead: profile N in-process ingests, print the top N rows"
    )
    args = parser.parse_args()

    bundles = [lis_bundle(i) for i in range(args.bundles)]
    url = args.database_url or fresh_database(args.admin_url)
    # The benchmark measures ingest: the server it starts checks no tokens (as in bench/concurrency.py).
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "LOG_LEVEL": "WARNING",
        "ENVIRONMENT": "development",
        "AUTH_ENABLED": "false",
    }
    try:
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if args.profile:
            profile(url, bundles, args.profile)
            return
        floor = validation_floor(bundles)
        result = run_server(args, bundles, url, env)
        result["validation_floor_bundles_per_s"] = round(floor, 1)
        result["ratio_to_floor"] = round(result["bundles_per_s"] / floor, 3)
        result["rollbacks"] = rollbacks(url)
    finally:
        if not (args.database_url or args.keep_database):
            drop_database(args.admin_url, url)
    print(json.dumps(result, indent=2))
    out = args.out or ROOT / "bench" / "results" / f"ingest_http_w{args.workers}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


def run_server(
    args: argparse.Namespace, bundles: list[dict[str, Any]], url: str, env: dict[str, str]
) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        payloads = [json.dumps(b).encode() for b in bundles]
        warm = max(1, len(payloads) // 20)
        asyncio.run(send_all(base, payloads[:warm], args.concurrency))
        cpu_before = server_cpu_seconds(server.pid)
        latencies, errors, elapsed = asyncio.run(send_all(base, payloads[warm:], args.concurrency))
        cpu_after = server_cpu_seconds(server.pid)
    finally:
        server.terminate()
        server.wait()
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100)
    return {
        "bundles": n,
        "resources_per_bundle": 7,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "database": url.split("://")[0],
        "bundles_per_s": round(n / elapsed, 1),
        "resources_per_s": round(7 * n / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "errors": errors,
        # CPU of the server process (and its workers) per bundle: less noisy than wall time on a busy box.
        "server_cpu_ms_per_bundle": (
            round((cpu_after - cpu_before) * 1000 / n, 2)
            if cpu_before is not None and cpu_after is not None
            else None
        ),
    }


if __name__ == "__main__":
    main()
