"""`make bench`: every benchmark in turn, at moderate sizes (a few minutes), on PostgreSQL and SQLite.

    .venv/bin/python bench/run.py                 # all of them
    .venv/bin/python bench/run.py ingest_http     # those whose name starts with one of these words
    .venv/bin/python bench/run.py --list

Each benchmark is a script in bench/ that prints its own table and writes bench/results/*.json; the ones
that need PostgreSQL create their databases on 127.0.0.1:5432 (user postgres, through the database `test`)
and drop them afterwards. A script that is not there yet is skipped with a note, as are PostgreSQL runs when
the server does not answer. Run by hand, never in tests; bench/README.md has the figures and how to read
them.
"""

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    args: tuple[str, ...] = ()
    postgres: bool = True


# Issue 8's list. Sizes are moderate so that the whole run takes minutes; each script's docstring gives the
# sizes behind the figures in bench/README.md.
BENCHMARKS = (
    Benchmark("ingest_http", "ingest_http.py", ("--bundles", "600", "--rounds", "3")),
    Benchmark("ingest_http_w2", "ingest_http.py", ("--bundles", "600", "--rounds", "2", "--workers", "2")),
    Benchmark(
        "ingest_http_sqlite",
        "ingest_http.py",
        ("--database", "sqlite", "--bundles", "300", "--rounds", "2"),
        postgres=False,
    ),
    Benchmark("bulk_import", "bulk_import.py", ("--postgres",)),
    Benchmark("bulk_import_sqlite", "bulk_import.py", (), postgres=False),
    Benchmark("queries", "queries.py", ("--patients", "200")),
    Benchmark("queries_sqlite", "queries.py", ("--patients", "100", "--sqlite"), postgres=False),
)


def postgres_answers() -> bool:
    engine = create_engine(ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("only", nargs="*", help="run only the benchmarks whose name starts with one of these")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or any(b.name.startswith(w) for w in args.only)]
    if args.list:
        for b in BENCHMARKS:
            present = "" if (ROOT / "bench" / b.script).exists() else "  (script not there yet)"
            print(f"{b.name:20} bench/{b.script} {' '.join(b.args)}{present}")
        return 0
    postgres = postgres_answers()
    if not postgres:
        print(f"note: PostgreSQL does not answer at {ADMIN_URL}: its benchmarks are skipped")
    outcomes: list[tuple[str, str]] = []
    for b in chosen:
        script = ROOT / "bench" / b.script
        if not script.exists():
            outcomes.append((b.name, f"skipped: bench/{b.script} is not there yet"))
            print(f"\n== {b.name}: skipped, bench/{b.script} is not there yet", flush=True)
            continue
        if b.postgres and not postgres:
            outcomes.append((b.name, "skipped: no PostgreSQL"))
            continue
        command = [sys.executable, str(script.relative_to(ROOT)), *b.args]
        print(f"\n== {b.name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(command, cwd=ROOT).returncode
        took = f"{time.perf_counter() - started:.0f} s"
        outcomes.append((b.name, f"done in {took}" if code == 0 else f"FAILED (exit {code}) after {took}"))
    print("\n== summary (figures above and in bench/results/)")
    for name, outcome in outcomes:
        print(f"{name:20} {outcome}")
    return 1 if any(o.startswith("FAILED") for _, o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
