"""Issue 7's race at full size: 32 clients each re-send the same 500 LIS bundles (shared patients) in their
own shuffled order, against a fresh PostgreSQL database. Prints duplicates found and the 5xx count.

    .venv/bin/python bench/concurrency.py [--clients 32] [--bundles 500]
"""

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.db.migrations import upgrade  # noqa: E402
from app.db.tables import IdentifierRow, ResourceRow  # noqa: E402
from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.ingest_http import lis_bundle  # noqa: E402


def fresh_database(admin_url: str, name: str) -> str:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def run(url: str, clients: int, bundles: int) -> dict[str, object]:
    app = create_app(
        Settings(database_url=url, environment="development", auth_enabled=False, log_level="WARNING")
    )
    payloads = [json.dumps(lis_bundle(i)).encode() for i in range(bundles)]
    codes: Counter[int] = Counter()
    entries: Counter[str] = Counter()
    transport = httpx.ASGITransport(app=app)

    async def sender(seed: int) -> None:
        order = list(range(bundles))
        random.Random(seed).shuffle(order)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as c:
            for i in order:
                r = await c.post(
                    "/fhir", content=payloads[i], headers={"content-type": "application/fhir+json"}
                )
                codes[r.status_code] += 1
                if r.status_code == 200:
                    entries.update(e["response"]["status"] for e in r.json()["entry"])

    started = time.perf_counter()
    await asyncio.gather(*(sender(seed) for seed in range(clients)))
    elapsed = time.perf_counter() - started
    with app.state.db.read() as session:
        duplicates = session.execute(
            select(IdentifierRow.resource_type, IdentifierRow.system, IdentifierRow.value, func.count())
            .group_by(IdentifierRow.resource_type, IdentifierRow.system, IdentifierRow.value)
            .having(func.count() > 1)
        ).all()
        stored = dict(
            session.execute(
                select(ResourceRow.resource_type, func.count())
                .where(ResourceRow.resource_type.not_in(("AuditEvent", "Provenance")))
                .group_by(ResourceRow.resource_type)
            ).all()
        )
    app.state.db.dispose()
    return {
        "clients": clients,
        "bundles": bundles,
        "requests": clients * bundles,
        "seconds": round(elapsed, 1),
        "status_codes": dict(codes),
        "entry_statuses": dict(entries),
        "five_xx": sum(n for c, n in codes.items() if c >= 500),
        "duplicate_natural_keys": len(duplicates),
        "stored": stored,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--bundles", type=int, default=500)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    url = fresh_database(args.admin_url, "mrdhub_bench_race")
    upgrade(url)
    result = asyncio.run(run(url, args.clients, args.bundles))
    print(json.dumps(result, indent=2))
    (ROOT / "bench" / "results" / "concurrency.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
