"""Issue 7: SMART Backend Services tokens, scopes, and site scoping on every route."""

import datetime as dt
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from app.main import create_app
from app.settings import Settings
from tests.api.test_timeline import mrd, organization
from tests.builders import bundle, patient, post, urn
from tests.conftest import FHIR_JSON, TokenFactory, client_assertion

pytestmark = pytest.mark.anyio
TOKEN_URL = "http://mrdhub.test/auth/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SITE = "urn:mrdhub:site"


async def as_client(app: object, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://mrdhub.test", headers=headers
    )  # type: ignore[arg-type]


async def request_token(app: object, assertion: str, scope: str = "system/*.rs") -> httpx.Response:
    async with await as_client(app, None) as c:
        return await c.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
                "scope": scope,
            },
        )


async def test_smart_configuration_names_the_token_endpoint(app: object) -> None:
    async with await as_client(app, None) as c:
        config = (await c.get("/.well-known/smart-configuration")).json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}


async def test_a_valid_assertion_gets_a_short_lived_token_with_the_granted_scopes(
    app: object, client_key: ec.EllipticCurvePrivateKey
) -> None:
    answer = await request_token(
        app,
        client_assertion(client_key, "lis-hefei-apch", TOKEN_URL),
        scope="system/Observation.c system/Patient.rs",
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/Observation.c system/Patient.rs"


@pytest.mark.parametrize(
    ("client_id", "changes", "why"),
    [
        ("nobody", {}, "unknown client"),
        ("lis-hefei-apch", {"aud": "http://elsewhere/token"}, "audience"),
        ("lis-hefei-apch", {"exp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)}, "5 minutes"),
        ("lis-hefei-apch", {"exp": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)}, "expired"),
    ],
)
async def test_bad_client_assertions_are_refused(
    app: object, client_key: ec.EllipticCurvePrivateKey, client_id: str, changes: dict[str, Any], why: str
) -> None:
    answer = await request_token(app, client_assertion(client_key, client_id, TOKEN_URL, **changes))
    assert answer.status_code == 401, why
    assert answer.json()["error"] == "invalid_client"


async def test_an_assertion_signed_by_another_key_is_refused(app: object) -> None:
    stranger = ec.generate_private_key(ec.SECP384R1())
    answer = await request_token(app, client_assertion(stranger, "lis-hefei-apch", TOKEN_URL))
    assert answer.status_code == 401


async def test_a_replayed_assertion_is_refused(app: object, client_key: ec.EllipticCurvePrivateKey) -> None:
    assertion = client_assertion(client_key, "lis-hefei-apch", TOKEN_URL)
    assert (await request_token(app, assertion)).status_code == 200
    replay = await request_token(app, assertion)
    assert replay.status_code == 401
    assert "jti" in replay.json()["error_description"]


async def test_scopes_beyond_the_registration_are_not_granted(
    app: object, client_key: ec.EllipticCurvePrivateKey
) -> None:
    answer = await request_token(
        app, client_assertion(client_key, "lis-hefei-apch", TOKEN_URL), scope="user/*.rs"
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_scope"


async def test_no_token_is_a_401_with_www_authenticate(app: object) -> None:
    async with await as_client(app, None) as c:
        fhir = await c.get("/fhir/Patient")
        api = await c.get("/api/v1/endpoints/primary")
        metadata = await c.get("/fhir/metadata")
    assert fhir.status_code == 401
    assert fhir.headers["www-authenticate"].startswith("Bearer")
    assert fhir.json()["resourceType"] == "OperationOutcome"
    assert api.status_code == 401
    assert api.headers["content-type"].startswith("application/problem+json")
    assert metadata.status_code == 200  # the CapabilityStatement is public


async def test_a_forged_token_is_a_401(app: object) -> None:
    async with await as_client(app, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.") as c:
        assert (await c.get("/fhir/Patient")).status_code == 401


async def test_a_write_only_lab_system_cannot_read(app: object, token_for: TokenFactory) -> None:
    async with await as_client(
        app, await token_for("lis-hefei-apch", "system/Patient.c system/Observation.c")
    ) as c:
        read = await c.get("/fhir/Patient")
        created = await c.post("/fhir/Organization", json=organization("HEFEI-APCH"), headers=FHIR_JSON)
        timeline = await c.get("/api/v1/endpoints/primary")
    assert read.status_code == 403
    assert read.json()["issue"][0]["code"] == "forbidden"
    assert created.status_code == 403  # Organization.c was not granted
    assert timeline.status_code == 403


def site_patient(site: str, mrn: str) -> dict[str, Any]:
    org, p = urn(), urn()
    return bundle(
        post(organization(site), org, if_none_exist=f"identifier={SITE}|{site}"),
        post(patient(mrn, organization=org), p),
        post(mrd(p, f"{mrn}-R", "2025-03-19T09:00:00+08:00", 0.2)),
    )


async def test_a_site_sees_and_writes_only_its_own_patients(app: object, token_for: TokenFactory) -> None:
    hefei = await as_client(app, await token_for("lis-hefei-apch"))
    shanghai = await as_client(app, await token_for("lis-shanghai-scmc"))
    office = await as_client(app, await token_for())
    async with hefei, shanghai, office:
        answer = await hefei.post("/fhir", json=site_patient("HEFEI-APCH", "H-1"), headers=FHIR_JSON)
        assert answer.status_code == 200, answer.text
        hefei_patient = answer.json()["entry"][1]["response"]["location"].split("/_history")[0]
        assert (
            await shanghai.post("/fhir", json=site_patient("SHANGHAI-SCMC", "S-1"), headers=FHIR_JSON)
        ).status_code == 200

        assert (await shanghai.get(f"/fhir/{hefei_patient}")).status_code == 404
        assert (await shanghai.get(f"/fhir/{hefei_patient}/_history")).status_code == 404
        assert (
            await shanghai.get(f"/api/v1/patients/{hefei_patient.split('/')[1]}/timeline")
        ).status_code == 404
        assert (await hefei.get(f"/fhir/{hefei_patient}")).status_code == 200
        assert (await shanghai.get("/fhir/Patient")).json()["total"] == 1
        assert (await shanghai.get("/fhir/Observation")).json()["total"] == 1
        assert (await office.get("/fhir/Patient")).json()["total"] == 2

        # Writing into another site's patient is refused as if the patient did not exist, and undone.
        foreign = bundle(post(mrd(hefei_patient, "X-1", "2025-03-20T09:00:00+08:00", 0.1)))
        refused = await shanghai.post("/fhir", json=foreign, headers=FHIR_JSON)
        assert refused.status_code == 404
        assert (await office.get("/fhir/Observation")).json()["total"] == 2
        assert (await shanghai.get("/fhir/Patient/_history")).status_code == 403


async def test_production_refuses_to_start_without_authorisation(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="Authorisation is off"):
        create_app(settings.model_copy(update={"auth_enabled": False}))


async def test_the_local_demo_runs_without_authorisation_and_says_so(settings: Settings) -> None:
    demo = create_app(settings.model_copy(update={"auth_enabled": False, "environment": "development"}))
    async with await as_client(demo, None) as c:
        assert (await c.get("/fhir/Patient")).status_code == 200
        ready = (await c.get("/readyz")).json()
    assert "OFF" in ready["authorisation"]
    demo.state.db.dispose()


async def audit_trail(office: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    answer = await office.get("/fhir/AuditEvent", params={"_count": "500", **params})
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json()["entry"] if e["search"]["mode"] == "match"]


async def test_writes_reads_and_refusals_leave_audit_events(app: object, token_for: TokenFactory) -> None:
    hefei = await as_client(app, await token_for("lis-hefei-apch"))
    office = await as_client(app, await token_for())
    async with hefei, office:
        answer = await hefei.post("/fhir", json=site_patient("HEFEI-APCH", "H-9"), headers=FHIR_JSON)
        patient_ref = answer.json()["entry"][1]["response"]["location"].split("/_history")[0]
        await hefei.get(f"/fhir/{patient_ref}")
        await hefei.get("/fhir/AuditEvent")  # refused: the trail is for the trial office

        by_client = await audit_trail(office, agent="urn:mrdhub:client|lis-hefei-apch")
        subtypes = sorted((e["subtype"][0]["code"], e["outcome"]) for e in by_client)
        assert ("transaction", "0") in subtypes
        assert ("read", "0") in subtypes
        assert ("search-type", "4") in subtypes
        about_patient = await audit_trail(office, patient=patient_ref)
        assert {e["subtype"][0]["code"] for e in about_patient} >= {"transaction", "read"}
        assert all(e["agent"][0]["who"]["identifier"]["value"] == "lis-hefei-apch" for e in about_patient)

        provenance = (await office.get("/fhir/Provenance", params={"target": patient_ref})).json()
        assert provenance["total"] == 1
        agent = provenance["entry"][0]["resource"]["agent"][0]["who"]["identifier"]["value"]
        assert agent == "lis-hefei-apch"


async def test_a_failed_transaction_leaves_a_failure_event_and_no_success(
    app: object, token_for: TokenFactory
) -> None:
    office = await as_client(app, await token_for())
    async with office:
        broken = bundle(post(mrd("Patient/nobody", "Z-1", "2025-03-20T09:00:00+08:00", 0.1)))
        assert (await office.post("/fhir", json=broken, headers=FHIR_JSON)).status_code == 400
        events = await audit_trail(office, subtype="create")
        assert [e["outcome"] for e in events if "/fhir" in e["outcomeDesc"]] == ["4"]
        assert (await office.get("/fhir/Observation")).json()["total"] == 0


async def test_nobody_writes_the_audit_trail_through_the_api(client: httpx.AsyncClient) -> None:
    fake = {
        "resourceType": "AuditEvent",
        "type": {"code": "rest"},
        "recorded": "2025-01-01T00:00:00Z",
        "agent": [{"requestor": True}],
        "source": {"observer": {"display": "x"}},
    }
    answer = await client.post("/fhir/AuditEvent", json=fake, headers=FHIR_JSON)
    assert answer.status_code == 403
