"""Faults against a real PostgreSQL started for these tests alone (initdb + pg_ctl in a temp dir, on a
free port on 127.0.0.1), so stopping it harms nothing else.

(a) The server stops: writes answer 503 OperationOutcome with Retry-After and /readyz fails, quickly; it
starts again: the same request succeeds without restarting the app. (b) A failure in the middle of a
transaction bundle (a trigger that raises on its last resource) leaves nothing of it; the client's retry
then stores each resource exactly once.
"""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.db.migrations import upgrade
from tests.builders import PATIENT_SYSTEM, bundle, mrd, patient, post, urn
from tests.conftest import FHIR_JSON
from tests.reliability.conftest import stored_rows

pytestmark = pytest.mark.anyio

MARKER = "INJECTED-FAULT-7f3a"


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temp dir: trust auth, 127.0.0.1 only. PostgreSQL refuses to run as root,
    so as root it runs as the `postgres` user."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.home = Path(tempfile.mkdtemp(prefix="mrdhub-pg-"))
        self.data = self.home / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.home, user="postgres", group="postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin_dir / tool), *args], check=True, capture_output=True, timeout=120
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.home / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    if not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"):
        pytest.skip("fault tests run on PostgreSQL only (set TEST_DATABASE_URL; CI does)")
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    server = ThrowawayPostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def database_url(postgres: ThrowawayPostgres) -> str:
    """The shared fixtures (settings, app, client) build the app on the throwaway server."""
    upgrade(postgres.url)
    return postgres.url


def report(mrn: str, *accessions: str) -> dict[str, Any]:
    p = urn()
    return bundle(
        post(patient(mrn), p, if_none_exist=f"identifier={PATIENT_SYSTEM}|{mrn}"),
        *(post(mrd(accession, p)) for accession in accessions),
    )


async def total(client: httpx.AsyncClient, resource_type: str) -> int:
    answer = await client.get(f"/fhir/{resource_type}")
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["total"]
    return count


async def test_an_unreachable_database_is_a_503_and_the_service_recovers_alone(
    postgres: ThrowawayPostgres, app: Any, client: httpx.AsyncClient
) -> None:
    first = await client.post("/fhir", json=report("MRN-F1", "ACC-F1"), headers=FHIR_JSON)
    assert first.status_code == 200, first.text
    assert (await client.get("/readyz")).status_code == 200

    postgres.stop()
    try:
        waiting = report("MRN-F2", "ACC-F2")
        started = time.monotonic()
        down = await client.post("/fhir", json=waiting, headers=FHIR_JSON)
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"] == str(app.state.settings.retry_after_s)
        issue = down.json()["issue"][0]
        assert (down.json()["resourceType"], issue["code"]) == ("OperationOutcome", "transient")
        assert (await client.get("/fhir/Observation")).status_code == 503
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"] == "unreachable"
        assert time.monotonic() - started < 5
    finally:
        postgres.start()

    again = await client.post("/fhir", json=waiting, headers=FHIR_JSON)
    assert again.status_code == 200, again.text
    assert (await client.get("/readyz")).status_code == 200
    assert await total(client, "Patient") == 2
    assert await total(client, "Observation") == 2


async def test_a_failure_inside_a_transaction_leaves_nothing_and_the_retry_lands_once(
    app: Any, client: httpx.AsyncClient
) -> None:
    engine = app.state.db.engine
    sent = report("MRN-T1", "ACC-T1", "ACC-T2", "ACC-T3")
    sent["entry"][3]["resource"]["note"] = [{"text": MARKER}]  # the last of its four resources fails
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION mrdhub_injected_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.content LIKE '%{MARKER}%' THEN RAISE EXCEPTION 'injected fault'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER mrdhub_injected_fault BEFORE INSERT ON resource_versions "
                "FOR EACH ROW EXECUTE FUNCTION mrdhub_injected_fault()"
            )
        )
    try:
        before = stored_rows(engine)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url=str(client.base_url), headers=client.headers
        ) as c:
            failed = await c.post("/fhir", json=sent, headers=FHIR_JSON)
        assert failed.status_code == 500, failed.text
        assert failed.json()["resourceType"] == "OperationOutcome"
        assert "incident" in failed.json()["issue"][0]["diagnostics"]
        assert stored_rows(engine) == before
    finally:
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER mrdhub_injected_fault ON resource_versions"))
            connection.execute(text("DROP FUNCTION mrdhub_injected_fault()"))

    for _ in range(2):  # the retry, and a second one the client sends because it never heard back
        retried = await client.post("/fhir", json=sent, headers=FHIR_JSON)
        assert retried.status_code == 200, retried.text
    assert await total(client, "Patient") == 1
    assert await total(client, "Observation") == 3
