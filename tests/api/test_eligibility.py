"""Issue 5 through the API: eligibility per criterion for stored and ad-hoc patients, CDS Hooks, screening."""

import asyncio
import copy
import datetime as dt
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
from tests.api.test_timeline import mrd, organization, specimen, window_phase
from tests.builders import CONCEPT, PATIENT_SYSTEM, bundle, patient, post, urn
from tests.conftest import FHIR_JSON, TokenFactory

pytestmark = pytest.mark.anyio
SITE = "urn:mrdhub:site"


def coded(concept: str, value: str, subject: str, when: str = "2025-02-27T10:00:00+08:00") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": CONCEPT, "code": concept}]},
        "subject": {"reference": subject},
        "effectiveDateTime": when,
        "valueCodeableConcept": {"coding": [{"system": CONCEPT, "code": value}]},
    }


def candidate(
    *, mrn: str = "E1", risk: str = "intermediate", d19: float = 0.35, consent: bool = True
) -> dict[str, Any]:
    """A child on induction day 1 = 2025-03-01 with a D19 bone-marrow flow MRD, as one transaction."""
    org, p, s = urn(), urn(), urn()
    entries = [
        post(organization(), org, if_none_exist=f"identifier={SITE}|SHANGHAI-SCMC"),
        post(patient(mrn, birth_date="2016-05-12", organization=org), p),
        post(
            {
                "resourceType": "Condition",
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "confirmed",
                        }
                    ]
                },
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "C91.0"}]},
                "subject": {"reference": p},
                "onsetDateTime": "2025-02-26",
            }
        ),
        post(coded("bm-morphology", "ALL", p)),
        post(coded("immunophenotype", "B-ALL", p)),
        post(coded("sigm", "negative", p)),
        post(coded("cns-status", "CNS1", p)),
        post(coded("provisional-risk", risk, p)),
        post(window_phase(p, "2025-03-01", ident=f"{mrn}-W")),
        post(specimen(p, f"{mrn}-S19"), s),
        post(mrd(p, f"{mrn}-R19", "2025-03-19T09:00:00+08:00", d19, specimen_ref=s, cells=800_000)),
    ]
    if consent:
        entries.append(
            post(
                {
                    "resourceType": "Consent",
                    "status": "active",
                    "scope": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                "code": "research",
                            }
                        ]
                    },
                    "category": [{"coding": [{"system": CONCEPT, "code": "consent-research"}]}],
                    "patient": {"reference": p},
                    "dateTime": "2025-03-20T10:00:00+08:00",
                }
            )
        )
    return bundle(*entries)


async def store(client: httpx.AsyncClient, report: dict[str, Any]) -> str:
    answer = await client.post("/fhir", json=report, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["entry"][1]["response"]["location"].split("/")[1])


def criterion(answer: dict[str, Any], criterion_id: str) -> dict[str, Any]:
    return next(c for c in answer["criteria"] if c["id"] == criterion_id)


async def eligibility(
    client: httpx.AsyncClient, patient_id: str, as_of: str = "2025-03-21"
) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/patients/{patient_id}/eligibility", params={"as_of": as_of})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_an_eligible_patient_with_every_criterion_and_its_evidence(client: httpx.AsyncClient) -> None:
    body = await eligibility(client, await store(client, candidate()))
    assert body["overall"] == "eligible", [
        c for c in body["criteria"] if c["status"] != ("met" if c["kind"] == "inclusion" else "not_met")
    ]
    assert body["as_of"] == "2025-03-21"
    assert body["protocol_version"].startswith("nct06607419@")
    assert len(body["criteria"]) == 16
    d19 = criterion(body, "d19-mrd")
    assert d19["status"] == "met"
    assert any(e.startswith("Observation/") for e in d19["evidence"])
    assert criterion(body, "d46-mrd-1pct")["status"] == "unknown"
    assert body["pending"]


async def test_provisional_low_risk_with_d19_below_0_1_percent_is_ineligible(
    client: httpx.AsyncClient,
) -> None:
    body = await eligibility(client, await store(client, candidate(risk="low", d19=0.05)))
    assert body["overall"] == "ineligible"
    assert criterion(body, "d19-mrd")["status"] == "not_met"


async def test_without_consent_the_answer_is_incomplete_and_says_what_is_missing(
    client: httpx.AsyncClient,
) -> None:
    body = await eligibility(client, await store(client, candidate(consent=False)))
    assert body["overall"] == "incomplete"
    assert criterion(body, "consent")["status"] == "unknown"
    assert body["missing"]


async def test_data_dated_after_as_of_are_ignored(client: httpx.AsyncClient) -> None:
    body = await eligibility(client, await store(client, candidate()), as_of="2025-03-10")
    assert criterion(body, "d19-mrd")["status"] == "unknown"
    assert body["overall"] != "eligible"


async def test_adhoc_bundle_is_evaluated_and_nothing_is_stored(client: httpx.AsyncClient) -> None:
    report = candidate()
    report["type"] = "collection"
    for entry in report["entry"]:
        entry.pop("request")
    answer = await client.post(
        "/api/v1/eligibility", params={"as_of": "2025-03-21"}, json=report, headers=FHIR_JSON
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["overall"] == "eligible"
    for resource_type in ("Patient", "Observation", "Organization"):
        assert (await client.get(f"/fhir/{resource_type}")).json()["total"] == 0


async def test_adhoc_bad_bundle_gets_the_ingest_operation_outcome(client: httpx.AsyncClient) -> None:
    report = candidate()
    report["entry"][10]["resource"]["effectiveDateTime"] = "2025-03-19T09:00:00"
    answer = await client.post("/api/v1/eligibility", json=report, headers=FHIR_JSON)
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["expression"] == ["Bundle.entry[10].resource.effectiveDateTime"]


async def test_cds_discovery_declares_the_prefetch_templates(client: httpx.AsyncClient) -> None:
    services = (await client.get("/cds-services")).json()["services"]
    assert services[0]["hook"] == "patient-view"
    assert services[0]["id"] == "nct06607419-eligibility"
    assert services[0]["prefetch"]["patient"] == "Patient/{{context.patientId}}"


def hook(patient_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(urn()),
        "context": {"patientId": patient_id, "userId": "Practitioner/1"},
        **extra,
    }


async def test_cds_with_prefetch_gives_an_eligible_card(client: httpx.AsyncClient) -> None:
    report = candidate()
    resources = [copy.deepcopy(e["resource"]) | {"id": f"r{i}"} for i, e in enumerate(report["entry"])]
    aliases = {
        e["fullUrl"]: f"{r['resourceType']}/{r['id']}"
        for e, r in zip(report["entry"], resources, strict=True)
        if e.get("fullUrl")
    }

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (aliases.get(v, v) if k == "reference" else resolve(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resources = [resolve(r) for r in resources]
    patient_resource = next(r for r in resources if r["resourceType"] == "Patient")
    searchset = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources if r["resourceType"] != "Patient"],
    }
    prefetch = {
        key: searchset
        for key in (
            "conditions",
            "observations",
            "medicationAdministrations",
            "medicationStatements",
            "procedures",
            "consents",
            "specimens",
            "researchSubjects",
        )
    }
    prefetch["patient"] = patient_resource
    answer = await client.post(
        "/cds-services/nct06607419-eligibility", json=hook(patient_resource["id"], prefetch=prefetch)
    )
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    # Organization is not prefetched: the site is unknown, yet eligibility does not depend on it.
    assert [c["indicator"] for c in cards] == ["info"], cards
    assert cards[0]["summary"] == "Eligible for NCT06607419"


@pytest.fixture
def fhir_server(settings: Settings, app: object) -> Iterator[str]:
    """mrdhub's own /fhir served by uvicorn on a free loopback port: a real FHIR server over HTTP."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(served, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/fhir"
    server.should_exit = True
    thread.join(timeout=10)
    served.state.db.dispose()


def allow_fhir_servers(app: Any, *servers: str) -> None:
    """The CDS allow-list of the running app (setting CDS_FHIR_SERVERS)."""
    app.state.settings = app.state.settings.model_copy(update={"cds_fhir_servers": list(servers)})


async def test_cds_without_prefetch_reads_the_fhir_server_over_http(
    client: httpx.AsyncClient, fhir_server: str, token_for: TokenFactory, app: Any
) -> None:
    allow_fhir_servers(app, fhir_server)
    patient_id = await store(client, candidate(mrn="CDS-1", consent=False))
    answer = await client.post(
        "/cds-services/nct06607419-eligibility",
        json=hook(
            patient_id,
            fhirServer=fhir_server,
            fhirAuthorization={"access_token": await token_for(scope="system/*.rs"), "token_type": "Bearer"},
        ),
    )
    assert answer.status_code == 200, answer.text
    cards = answer.json()["cards"]
    assert [c["indicator"] for c in cards] == ["warning"]
    assert "incomplete" in cards[0]["summary"]


async def test_cds_with_an_unreachable_fhir_server_answers_quickly_with_a_card(
    client: httpx.AsyncClient, app: Any
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    allow_fhir_servers(app, f"http://127.0.0.1:{dead}/fhir")
    started = time.monotonic()
    answer = await client.post(
        "/cds-services/nct06607419-eligibility", json=hook("1", fhirServer=f"http://127.0.0.1:{dead}/fhir")
    )
    assert answer.status_code == 200
    assert answer.json()["cards"][0]["summary"].endswith("could not be checked")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"hook": "patient-view", "context": "x"}', "context must be an object"),
        (b'{"hook": "patient-view", "context": {"patientId": "1"}, "prefetch": "x"}', "prefetch must be"),
        (b'{"hook": "patient-view", "context": {"patientId": "1"}, "prefetch": {"patient": "x"}}', ""),
    ],
    ids=["not-json", "not-utf8", "context-string", "prefetch-string", "prefetch-entry-string"],
)
async def test_a_malformed_hook_request_is_a_422_not_a_500(
    client: httpx.AsyncClient, body: bytes, why: str
) -> None:
    answer = await client.post(
        "/cds-services/nct06607419-eligibility", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code in (200, 422), answer.text
    if why:
        assert answer.status_code == 422
        assert why in answer.json()["error"]


async def test_cds_never_reads_a_fhir_server_that_is_not_allowed(
    client: httpx.AsyncClient, fhir_server: str, token_for: TokenFactory, app: Any
) -> None:
    patient_id = await store(client, candidate(mrn="CDS-SSRF", consent=False))
    token = {"access_token": await token_for(scope="system/*.rs"), "token_type": "Bearer"}
    allow_fhir_servers(app, fhir_server.replace("/fhir", "/other"))
    before = (await client.get("/fhir/AuditEvent", params={"_count": "1"})).json()["total"]
    answer = await client.post(
        "/cds-services/nct06607419-eligibility",
        json=hook(patient_id, fhirServer=fhir_server, fhirAuthorization=token),
    )
    assert answer.status_code == 200, answer.text
    [card] = answer.json()["cards"]
    assert card["summary"].endswith("could not be checked")
    assert "not an allowed FHIR server" in card["detail"]
    # The FHIR server was never called: it audits every read, and only our own two requests were audited.
    after = (await client.get("/fhir/AuditEvent", params={"_count": "1"})).json()["total"]
    assert after - before == 2


async def test_cds_refuses_a_patient_id_that_would_change_the_url(
    client: httpx.AsyncClient, fhir_server: str, app: Any
) -> None:
    allow_fhir_servers(app, fhir_server)
    answer = await client.post(
        "/cds-services/nct06607419-eligibility", json=hook("../../admin?x=", fhirServer=fhir_server)
    )
    assert answer.status_code == 200, answer.text
    assert "not a FHIR id" in answer.json()["cards"][0]["detail"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://ehr.example/fhir", True),
        ("https://ehr.example/fhir/Patient/1", True),
        ("https://ehr.example/fhir/Observation?patient=1&_page=2", True),
        ("https://ehr.example/fhirX/Patient/1", False),
        ("https://ehr.example/fhir/../admin", False),
        ("http://ehr.example/fhir/Patient/1", False),
        ("https://ehr.example:8443/fhir/Patient/1", False),
        ("https://ehr.example@evil.example/fhir/Patient/1", False),
        ("https://evil.example/fhir/Patient/1", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("not a url", False),
    ],
)
def test_the_fhir_server_allow_list_matches_origin_and_path(url: str, allowed: bool) -> None:
    from app.fhir.client import is_allowed

    assert is_allowed(url, ["https://ehr.example/fhir/"]) is allowed


async def test_screening_enrols_an_eligible_patient_and_logs_the_decision(client: httpx.AsyncClient) -> None:
    patient_id = await store(client, candidate())
    answer = await client.post(
        "/api/v1/screening",
        json={
            "patient": patient_id,
            "as_of": "2025-03-21",
            "decision": "enrol",
            "reason": "meets all criteria",
        },
    )
    assert answer.status_code == 200, answer.text
    subject = (await client.get(f"/fhir/{answer.json()['research_subject'].split('/_history')[0]}")).json()
    assert subject["status"] == "on-study"
    assert subject["assignedArm"] == "blinatumomab"
    assert subject["period"]["start"] == "2025-03-21"
    log = (await client.get("/api/v1/screening-log")).json()["decisions"]
    assert [(d["decision"], d["overall"], d["site"]) for d in log] == [("enrol", "eligible", "SHANGHAI-SCMC")]
    csv = await client.get("/api/v1/screening-log", headers={"Accept": "text/csv"})
    assert csv.text.splitlines()[0].startswith("patient,site,as_of,decision")


async def test_consort_at_a_cut_off_ignores_screening_decisions_recorded_after_it(
    client: httpx.AsyncClient,
) -> None:
    patient_id = await store(client, candidate(mrn="CUT-1"))  # consented on 2025-03-20
    before_decision = (dt.datetime.now(dt.UTC) - dt.timedelta(milliseconds=1)).isoformat()
    await asyncio.sleep(0.01)
    decided = await client.post(
        "/api/v1/screening",
        json={
            "patient": patient_id,
            "as_of": "2025-03-19",
            "decision": "not-enrol",
            "reason": "no consent yet",
        },
    )
    assert decided.status_code == 200, decided.text

    async def eligible(as_of: str | None) -> int:
        body = (await client.get("/api/v1/consort", params={"as_of": as_of} if as_of else {})).json()
        return int({s["step"]: s["n"] for s in body["steps"]}["eligible"])

    # Screened on 2025-03-19 (no consent yet: incomplete); at a cut-off before that decision was recorded,
    # the patient is screened as of the cut-off day, when the consent is there.
    assert await eligible(None) == 0
    assert await eligible(before_decision) == 1


async def test_enrolling_a_patient_who_is_not_eligible_needs_an_override(client: httpx.AsyncClient) -> None:
    patient_id = await store(client, candidate(consent=False))
    refused = await client.post(
        "/api/v1/screening",
        json={"patient": patient_id, "as_of": "2025-03-21", "decision": "enrol", "reason": "PI decision"},
    )
    assert refused.status_code == 422
    assert refused.json()["parameter"] == "override_reason"
    assert (await client.get("/fhir/ResearchSubject")).json()["total"] == 0
    accepted = await client.post(
        "/api/v1/screening",
        json={
            "patient": patient_id,
            "as_of": "2025-03-21",
            "decision": "enrol",
            "reason": "PI decision",
            "override_reason": "consent on paper, scan pending",
        },
    )
    assert accepted.status_code == 200
    assert (await client.get("/fhir/ResearchSubject")).json()["total"] == 1


async def test_not_enrolling_records_the_eligibility_status(client: httpx.AsyncClient) -> None:
    patient_id = await store(client, candidate(risk="low", d19=0.05))
    answer = await client.post(
        "/api/v1/screening",
        json={
            "patient": f"{PATIENT_SYSTEM}|E1",
            "as_of": "2025-03-21",
            "decision": "not-enrol",
            "reason": "D19 below threshold",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ineligible"
    del patient_id
