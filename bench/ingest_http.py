"""Ingest benchmark: 7-resource LIS bundles POSTed to a real uvicorn server, c concurrent clients.

    .venv/bin/python bench/ingest_http.py --bundles 2000 --concurrency 16 [--database-url URL]

Starts uvicorn (one worker) on a free loopback port against a fresh database (PostgreSQL by default),
sends the bundles, and prints bundles/s, resources/s and latency percentiles; alongside, the floor:
the same bundles through fhir.resources validation alone, in this process. Run by hand, never in tests.
"""

import argparse
import asyncio
import json
import os
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


def fresh_database(admin_url: str) -> str:
    name = f"mrdhub_bench_{os.getpid()}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


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
    args = parser.parse_args()

    bundles = [lis_bundle(i) for i in range(args.bundles)]
    floor = validation_floor(bundles)
    url = args.database_url or fresh_database(args.admin_url)
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )
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
        latencies, errors, elapsed = asyncio.run(send_all(base, payloads[warm:], args.concurrency))
    finally:
        server.terminate()
        server.wait()
    n = len(latencies)
    q = statistics.quantiles(latencies, n=100)
    result = {
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
        "validation_floor_bundles_per_s": round(floor, 1),
        "ratio_to_floor": round(n / elapsed / floor, 3),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / f"ingest_http_w{args.workers}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
