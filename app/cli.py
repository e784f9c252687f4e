"""Operator commands: `python -m app.cli migrate | load-demo`."""

import argparse
import json
import sys
from pathlib import Path

from app.db.engine import Database
from app.db.migrations import upgrade
from app.fhir.outcome import FhirError
from app.services.ingest import process_bundle
from app.settings import ROOT, Settings


def migrate(settings: Settings) -> None:
    upgrade(settings.database_url)
    print("database migrated to head")


def load_demo(settings: Settings, directory: Path) -> int:
    """Load the demo bundles through the same ingest path a LIS uses; re-running changes nothing."""
    db = Database(settings.database_url)
    failures = 0
    files = sorted(directory.glob("*.json"))
    for path in files:
        try:
            answer = process_bundle(
                db,
                json.loads(path.read_text()),
                max_entries=settings.max_bundle_entries,
                retries=settings.write_retries,
                checks=(),
                prefer="minimal",
            )
        except FhirError as exc:
            failures += 1
            print(f"{path.name}: rejected ({exc.status}): {exc}", file=sys.stderr)
            continue
        statuses = [e["response"]["status"] for e in answer["entry"]]
        created = sum(s.startswith("201") for s in statuses)
        print(f"{path.name}: {len(statuses)} entries, {created} created")
    db.dispose()
    print(f"demo data: {len(files) - failures} of {len(files)} bundles loaded")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mrdhub")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the latest schema")
    demo = commands.add_parser("load-demo", help="load the demo bundles (idempotent)")
    demo.add_argument("--dir", type=Path, default=ROOT / "demo" / "bundles")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    return load_demo(settings, args.dir)


if __name__ == "__main__":
    sys.exit(main())
