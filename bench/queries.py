"""Query benchmark: a patient's timeline and eligibility, and the cohort's endpoint summaries, over HTTP.

    .venv/bin/python bench/queries.py --patients 2000                     # fresh PostgreSQL db, loaded here
    .venv/bin/python bench/queries.py --database-url URL --keep           # a database loaded before
    .venv/bin/python bench/queries.py --patients 300 --sqlite

Loads a synthetic cohort (bench/cohort.py, seed 7, as NDJSON through the bulk import, then ANALYZE)
unless the database already holds one, starts uvicorn (one worker, authorisation off as in the ingest
benchmark) and measures, one request at a time so that the figures are latencies and not queueing:
`--samples` timeline and eligibility reads of random patients (p50/p95/p99) and `--repeat` rounds of each
endpoint summary (primary flow and NGS, EFS; median and max). The issue-8 goals at 100,000 patients:
timeline p99 < 20 ms, eligibility p99 < 30 ms, primary and EFS summaries < 300 ms. Results go to
bench/results/queries_<database>_<n>.json. Run by hand, never in tests.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_http import drop_database, free_port, fresh_database  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SEED = 7


def load(url: str, patients: int) -> tuple[int, float]:
    """The cohort as NDJSON through the bulk import (what `POST /api/v1/import` runs): (lines, seconds)."""
    import tempfile

    from app.db.engine import Database
    from app.db.migrations import upgrade
    from app.protocol import load_protocol
    from app.services.bulk_import import import_file
    from app.services.checks import protocol_checks
    from app.services.ingest import TRUSTED
    from app.settings import Settings
    from bench.bulk_import import write_cohort

    upgrade(url)
    db = Database(url)
    checks = protocol_checks(load_protocol(Settings().protocol_path))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "cohort.ndjson"
            lines = write_cohort(path, patients, SEED)
            started = time.perf_counter()
            report = import_file(db, path, principal=TRUSTED, checks=checks, retries=5)
            seconds = time.perf_counter() - started
    finally:
        db.dispose()
    if report.progress.rejected:
        raise SystemExit(f"{report.progress.rejected} of {lines} lines rejected while loading the cohort")
    if url.startswith("postgresql"):
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("ANALYZE"))  # planner statistics of the freshly loaded tables
        engine.dispose()
    return lines, seconds


def stored_counts(url: str) -> tuple[int, int]:
    """(patients, resources) currently stored."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            patients = connection.execute(
                text("SELECT count(*) FROM resources WHERE resource_type = 'Patient' AND NOT deleted")
            ).scalar_one()
            resources = connection.execute(text("SELECT count(*) FROM resources")).scalar_one()
    finally:
        engine.dispose()
    return int(patients), int(resources)


def patient_ids(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT logical_id FROM resources WHERE resource_type = 'Patient' AND NOT deleted")
            ).scalars()
            return [str(r) for r in rows]
    finally:
        engine.dispose()


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "AUTH_ENABLED": "false",
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "WARNING",
        "REQUEST_TIMEOUT_S": "600",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not become ready")


def timed(call: Callable[[], httpx.Response]) -> float:
    started = time.perf_counter()
    answer = call()
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"{answer.request.url.path}: {answer.status_code} {answer.text[:300]}")
    return elapsed


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(values), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 1)}


def measure(base: str, ids: list[str], samples: int, repeat: int) -> dict[str, Any]:
    rng = random.Random(SEED)
    chosen = [rng.choice(ids) for _ in range(samples)]
    figures: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=600) as http:
        http.get(f"/api/v1/patients/{chosen[0]}/timeline")  # warm the connection pool and imports
        figures["timeline"] = percentiles(
            [timed(lambda i=i: http.get(f"/api/v1/patients/{i}/timeline")) for i in chosen]
        )
        figures["eligibility"] = percentiles(
            [timed(lambda i=i: http.get(f"/api/v1/patients/{i}/eligibility")) for i in chosen]
        )
        summaries = {
            "primary_flow": "/api/v1/endpoints/primary?assay=flow",
            "primary_ngs": "/api/v1/endpoints/primary?assay=ngs",
            "efs": "/api/v1/endpoints/efs",
        }
        for name, path in summaries.items():
            rounds = [timed(lambda p=path: http.get(p)) for _ in range(repeat)]
            figures[name] = {
                "n": repeat,
                "first": round(rounds[0], 1),
                "median": round(statistics.median(rounds), 1),
                "max": round(max(rounds), 1),
            }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--patients", type=int, default=1000, help="cohort size to load into a fresh database"
    )
    parser.add_argument("--database-url", help="use this database (loaded if it holds no patient)")
    parser.add_argument("--sqlite", action="store_true", help="a fresh SQLite file instead of PostgreSQL")
    parser.add_argument("--keep", action="store_true", help="do not drop the fresh database afterwards")
    parser.add_argument("--samples", type=int, default=200, help="timeline and eligibility reads")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of each endpoint summary")
    args = parser.parse_args()

    fresh = args.database_url is None
    if args.database_url:
        url = args.database_url
    elif args.sqlite:
        path = ROOT / "var" / f"bench-queries-{os.getpid()}.sqlite3"
        path.parent.mkdir(exist_ok=True)
        url = f"sqlite:///{path}"
    else:
        url = fresh_database(ADMIN_URL)
    server = None
    try:
        loaded: dict[str, Any] = {}
        from app.db.migrations import upgrade

        upgrade(url)
        if stored_counts(url)[0] == 0:
            lines, seconds = load(url, args.patients)
            rate = round(lines / seconds)
            loaded = {"resources": lines, "seconds": round(seconds, 1), "resources_per_s": rate}
        patients, resources = stored_counts(url)
        port = free_port()
        server = start_server(url, port)
        figures = measure(f"http://127.0.0.1:{port}", patient_ids(url), args.samples, args.repeat)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if fresh and not args.keep:
            if url.startswith("sqlite"):
                Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
            else:
                drop_database(ADMIN_URL, url)
    database = "sqlite" if url.startswith("sqlite") else "postgresql"
    result = {"database": database, "patients": patients, "resources": resources, "load": loaded, **figures}
    out = ROOT / "bench" / "results" / f"queries_{database}_{patients}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{patients} patients, {resources} resources on {database}")
    print(f"{'query':<14}{'n':>5}{'p50/median ms':>15}{'p95/first ms':>14}{'p99 ms':>9}{'max ms':>9}")
    for name in ("timeline", "eligibility"):
        f = figures[name]
        print(f"{name:<14}{f['n']:>5}{f['p50']:>15}{f['p95']:>14}{f['p99']:>9}{f['max']:>9}")
    for name in ("primary_flow", "primary_ngs", "efs"):
        f = figures[name]
        print(f"{name:<14}{f['n']:>5}{f['median']:>15}{f['first']:>14}{'':>9}{f['max']:>9}")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
