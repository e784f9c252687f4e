"""Bulk NDJSON import against its validation floor, with resident memory over the run (issue 8).

    .venv/bin/python bench/bulk_import.py --patients 2000                 # a fresh SQLite file in a tmp dir
    .venv/bin/python bench/bulk_import.py --patients 2000 --postgres      # a new PostgreSQL db, dropped after
    .venv/bin/python bench/bulk_import.py --patients 2000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bulk_bench   # an empty, existing database

A cohort of N patients (bench/cohort.py, ~43 resources each) is written as one NDJSON file, every resource
once in its final state, shared resources first, then patient by patient. Then, in this process:

- the floor: every line through `json.loads` and fhir.resources validation (`validate_resource`) alone,
  which any importer of NDJSON must do at least;
- the import: the same file through the code a `POST /api/v1/import` job runs (`bulk_import.import_file`,
  500 lines to a transaction, audit trail included), on the migrated, empty database; then the same file
  once more (re-import: nothing to write, every line compared with what is stored).

Resident memory (VmRSS from /proc/self/status) is sampled every 0.2 s during the import and reported at
each quarter of the file, with its peak, so growth over the run shows. Figures are printed as a table and
written to bench/results/bulk_import.json (bulk_import_postgresql.json with --postgres). Run by hand, never
in tests.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db.engine import Database
from app.db.migrations import upgrade
from app.fhir.resources import validate_resource
from app.protocol import load_protocol
from app.services.bulk_import import Report, import_file
from app.services.checks import protocol_checks
from app.services.ingest import TRUSTED
from app.settings import Settings
from bench.cohort import generate

RESULTS = Path(__file__).resolve().parent / "results"
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def create_database(admin_url: str) -> str:
    name = f"mrdhub_bulk_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def write_cohort(path: Path, patients: int, seed: int) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for resource in generate(patients=patients, seed=seed).resources():
            out.write(json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def validation_floor(path: Path) -> float:
    start = time.perf_counter()
    lines = 0
    with path.open("rb") as source:
        for raw in source:
            validate_resource(json.loads(raw))
            lines += 1
    return lines / (time.perf_counter() - start)


class Sampler:
    """VmRSS every `every_s`, with how many lines had been read by then."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s = every_s
        self.samples: list[tuple[int, int]] = []  # (lines read, KiB)
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((self.lines, rss_kib()))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self.lines, rss_kib()))

    def on_progress(self, report: Report) -> bool:
        self.lines = report.progress.lines
        return True

    def at_quarters(self, total: int) -> list[int]:
        """RSS (MiB) when a quarter, half, three quarters and all of the file had been read."""
        marks = []
        for quarter in (1, 2, 3, 4):
            wanted = total * quarter // 4
            kib = next((k for lines, k in self.samples if lines >= wanted), self.samples[-1][1])
            marks.append(round(kib / 1024))
        return marks


def run_import(db: Database, path: Path, total: int, checks: Any, workers: int) -> dict[str, Any]:
    with Sampler() as sampler:
        start = time.perf_counter()
        report = import_file(
            db,
            path,
            principal=TRUSTED,
            checks=checks,
            retries=5,
            on_progress=sampler.on_progress,
            workers=workers,
        )
        seconds = time.perf_counter() - start
    progress = report.progress
    return {
        "seconds": round(seconds, 2),
        "resources_per_s": round(progress.accepted / seconds, 1),
        "accepted": progress.accepted,
        "created": progress.created,
        "unchanged": progress.unchanged,
        "rejected": progress.rejected,
        "rss_mib_at_quarters": sampler.at_quarters(total),
        "rss_mib_peak": round(max(k for _, k in sampler.samples) / 1024),
    }


def table(figures: dict[str, Any]) -> str:
    floor = figures["floor_resources_per_s"]
    rows = [
        "| run | resources/s | ratio to floor | seconds | RSS MiB at 1/4, 1/2, 3/4, end | peak MiB |",
        "|---|---|---|---|---|---|",
        f"| floor (json.loads + fhir.resources) | {floor:.0f} | 1.00 | | | |",
    ]
    for name in ("import", "reimport"):
        run = figures[name]
        quarters = ", ".join(str(q) for q in run["rss_mib_at_quarters"])
        rows.append(
            f"| {name} | {run['resources_per_s']:.0f} | {run['resources_per_s'] / floor:.2f} | "
            f"{run['seconds']} | {quarters} | {run['rss_mib_peak']} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=500, help="cohort size (~43 resources each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file in a tmp dir)")
    parser.add_argument("--postgres", action="store_true", help="a new PostgreSQL database, dropped after")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="where --postgres creates its database")
    parser.add_argument("--out", type=Path, help="default: bench/results/bulk_import[_postgresql].json")
    parser.add_argument("--workers", type=int, default=0, help="validating processes beside the writer")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mrdhub-bulk-") as tmp:
        folder = Path(tmp)
        created = create_database(args.admin_url) if args.postgres else None
        url = created or args.database_url or f"sqlite:///{folder / 'bulk.sqlite3'}"
        path = folder / "cohort.ndjson"
        total = write_cohort(path, args.patients, args.seed)
        print(
            f"{total} resources ({path.stat().st_size / 1e6:.0f} MB) for {args.patients} patients", flush=True
        )
        upgrade(url)
        db = Database(url)
        checks = protocol_checks(load_protocol(Settings().protocol_path))
        try:
            floor = validation_floor(path)
            first = run_import(db, path, total, checks, args.workers)
            again = run_import(db, path, total, checks, args.workers)
        finally:
            db.dispose()
            if created:
                drop_database(args.admin_url, created)
    figures = {
        "date": time.strftime("%Y-%m-%d"),
        "patients": args.patients,
        "resources": total,
        "database": make_url(url).get_backend_name(),
        "workers": args.workers,
        "floor_resources_per_s": round(floor, 1),
        "import": first,
        "reimport": again,
        "ratio_to_floor": round(first["resources_per_s"] / floor, 3),
        "reimport_ratio_to_floor": round(again["resources_per_s"] / floor, 3),
    }
    out = args.out or RESULTS / (
        "bulk_import.json" if figures["database"] == "sqlite" else "bulk_import_postgresql.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
