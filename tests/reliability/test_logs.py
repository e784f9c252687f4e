"""Logs are JSON lines with a request id, and carry no PHI: no names, birth dates, identifiers or values.

Every log line from every library is captured (stderr, where the JSON handler writes, and the records of
the standard library's root logger, which uvicorn's and SQLAlchemy's loggers reach), at DEBUG, while
PHI-rich bundles are stored, rejected (400, 412), crash a check (500) and are searched for.
"""

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from app.main import create_app
from app.settings import Settings
from tests.builders import PATIENT_SYSTEM, bundle, mrd, patient, post, urn
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio

MRN = "MRN-PHI-7734119"
ACCESSION = "ACC-PHI-55120"
FAMILY = "Wenjingfam"
GIVEN = "Qiaolian"
BIRTH_DATE = "2016-02-29"
PHONE = "13800138000"
STREET = "88 Pingjiang Lu"
# Seven decimals: a timestamp has six, so its microseconds cannot read as this value by chance.
MRD_VALUE = 0.0734219
PHI = (MRN, ACCESSION, FAMILY, GIVEN, BIRTH_DATE, PHONE, STREET, str(MRD_VALUE), "2016-02-30", "Pingjiang")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.log_level = "DEBUG"
    return settings


def phi_patient(mrn: str = MRN, birth_date: str = BIRTH_DATE) -> dict[str, Any]:
    return patient(mrn, birth_date=birth_date) | {
        "name": [{"family": FAMILY, "given": [GIVEN]}],
        "telecom": [{"system": "phone", "value": PHONE}],
        "address": [{"line": [STREET], "city": "Suzhou"}],
    }


def phi_report(
    *, birth_date: str = BIRTH_DATE, effective: str = "2025-03-19T09:30:00+08:00"
) -> dict[str, Any]:
    p = urn()
    return bundle(
        post(phi_patient(birth_date=birth_date), p, if_none_exist=f"identifier={PATIENT_SYSTEM}|{MRN}"),
        post(mrd(ACCESSION, p, value=MRD_VALUE, effective=effective)),
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def assert_no_phi(text: str) -> None:
    leaked = [s for s in PHI if s.lower() in text.lower()]
    assert not leaked, f"PHI in the logs: {leaked}"


async def test_logs_are_json_with_request_ids_and_no_phi(
    app: Any, client: httpx.AsyncClient, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    capfd.readouterr()
    answers: dict[str, httpx.Response] = {}

    answers["stored"] = await client.post("/fhir", json=phi_report(), headers=FHIR_JSON)
    answers["again"] = await client.post("/fhir", json=phi_report(), headers=FHIR_JSON)
    answers["bad date"] = await client.post(
        "/fhir", json=phi_report(birth_date="2016-02-30"), headers=FHIR_JSON
    )
    answers["naive"] = await client.post(
        "/fhir", json=phi_report(effective="2025-03-19T09:30:00"), headers=FHIR_JSON
    )
    answers["bad json"] = await client.post(
        "/fhir", content=json.dumps(phi_report())[:-40].encode(), headers=FHIR_JSON
    )
    patient_id = answers["stored"].json()["entry"][0]["response"]["location"].split("/")[1]
    answers["412"] = await client.put(
        f"/fhir/Patient/{patient_id}",
        json=phi_patient() | {"id": patient_id},
        headers=FHIR_JSON | {"If-Match": 'W/"99"'},
    )
    answers["identifier search"] = await client.get(
        "/fhir/Patient", params={"identifier": f"{PATIENT_SYSTEM}|{MRN}", "birthdate": BIRTH_DATE}
    )
    answers["unknown parameter"] = await client.get("/fhir/Patient", params={"name": FAMILY})
    answers["read"] = await client.get(
        f"/fhir/Patient/{patient_id}", headers={"X-Request-ID": "lis-req-0001"}
    )

    def leaky_check(resource: dict[str, Any]) -> list[object]:
        raise KeyError(f"{resource.get('birthDate')} {resource.get('identifier')} {MRD_VALUE}")

    app.state.checks = (leaky_check,)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url=str(client.base_url), headers=client.headers
    ) as c:
        answers["500"] = await c.post("/fhir", json=phi_report(), headers=FHIR_JSON)

    statuses = {name: a.status_code for name, a in answers.items()}
    assert statuses == {
        "stored": 200,
        "again": 200,
        "bad date": 400,
        "naive": 400,
        "bad json": 400,
        "412": 412,
        "identifier search": 200,
        "unknown parameter": 400,
        "read": 200,
        "500": 500,
    }
    assert MRN in answers["identifier search"].text  # the PHI is there to leak

    captured = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert_no_phi(captured.out + captured.err + caplog.text + records)

    lines = json_lines(captured.err)
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) >= len(answers)
    for answer in answers.values():
        rid = answer.headers["X-Request-ID"]
        assert [line["status"] for line in requests if line["request_id"] == rid] == [answer.status_code]
    assert answers["read"].headers["X-Request-ID"] == "lis-req-0001"
    read_line = next(line for line in requests if line["request_id"] == "lis-req-0001")
    assert read_line["route"] == "/fhir/{resource_type}/{logical_id}"
    assert read_line["resource_type"] == "Patient"
    assert read_line["method"] == "GET"
    assert read_line["duration_ms"] >= 0

    incident = answers["500"].json()["issue"][0]["diagnostics"].split("incident ")[1].split()[0]
    crash = next(line for line in lines if line["event"] == "unhandled_error")
    assert crash["incident"] == incident
    assert crash["request_id"] == answers["500"].headers["X-Request-ID"]
    assert crash["exception"]["type"] == "KeyError"
    assert any("leaky_check" in frame for frame in crash["exception"]["frames"])


async def test_a_request_id_that_is_not_an_id_is_replaced(client: httpx.AsyncClient) -> None:
    answer = await client.get("/healthz", headers={"X-Request-ID": f"{FAMILY} {BIRTH_DATE}"})
    assert answer.headers["X-Request-ID"] != f"{FAMILY} {BIRTH_DATE}"
    assert len(answer.headers["X-Request-ID"]) == 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(settings: Settings) -> Iterator[str]:
    """The app under a real uvicorn on 127.0.0.1, built by uvicorn's factory call as `make run` does, so
    uvicorn's own logging is configured first and the app's configuration has to take it over."""
    built: list[Any] = []

    def factory() -> Any:
        built.append(create_app(settings))
        return built[-1]

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(factory, factory=True, host="127.0.0.1", port=port, log_level="debug", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        for app in built:
            app.state.db.dispose()


async def test_under_uvicorn_no_access_log_line_carries_the_query_string(
    client: httpx.AsyncClient, served: str, capfd: pytest.CaptureFixture[str]
) -> None:
    await client.post("/fhir", json=phi_report(), headers=FHIR_JSON)
    capfd.readouterr()
    async with httpx.AsyncClient(
        base_url=served, headers={"Authorization": client.headers["Authorization"]}
    ) as c:
        answer = await c.get(
            "/fhir/Patient", params={"identifier": f"{PATIENT_SYSTEM}|{MRN}", "birthdate": BIRTH_DATE}
        )
        assert answer.status_code == 200
        assert MRN in answer.text
        missing = await c.get(f"/fhir/Patient/{MRN}")
        assert missing.status_code == 404
    # The server thread writes its request line after the answer has left: wait for both lines.
    out, err = "", ""
    for _ in range(100):
        captured = capfd.readouterr()
        out, err = out + captured.out, err + captured.err
        if sum(line["event"] == "request" for line in json_lines(err)) >= 2:
            break
        time.sleep(0.02)
    assert_no_phi(out + err)
    requests = [line for line in json_lines(err) if line["event"] == "request"]
    assert [(r["route"], r["status"]) for r in requests] == [
        ("/fhir/{resource_type}", 200),
        ("/fhir/{resource_type}/{logical_id}", 404),
    ]
