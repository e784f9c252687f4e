"""The primary endpoint from derived per-patient rows (issue 8) answers exactly what the full computation
answers, at every cut-off and after every kind of write, and never from a stale row."""

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.db import derived
from app.domain import endpoints as ep
from app.domain.protocol import Assay
from app.services import endpoints, summaries
from app.services.ingest import process_bundle
from bench.cohort import generate
from tests.api.test_endpoints import trial_patient
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio

TODAY = dt.date.today()
# A cohort treated years ago (every fact settled), and one whose induction starts next month (every
# clinical fact after today's cut-off, recorded today).
PAST, FUTURE = TODAY - dt.timedelta(days=4 * 365), TODAY + dt.timedelta(days=30)


def fresh(
    app: Any, *, as_of: str | None, assay: str = "flow", analysis_set: str = "full", explain: bool
) -> str:
    """The full computation: every record read as recorded by the cut-off, every timeline rebuilt."""
    db, protocol = app.state.db, app.state.protocol
    parsed = endpoints.parse_as_of(as_of)
    result = ep.primary_endpoint(
        timelines=endpoints.cohort_timelines(db, protocol, parsed),
        protocol=protocol,
        as_of=endpoints.resolve_as_of(protocol, parsed),
        assay=Assay(assay),
        analysis_set=analysis_set,
    )
    return json.dumps(ep.primary_to_json(result, explain=explain), sort_keys=True)


async def served(client: httpx.AsyncClient, **params: Any) -> str:
    answer = await client.get(
        "/api/v1/endpoints/primary", params={k: v for k, v in params.items() if v is not None}
    )
    assert answer.status_code == 200, answer.text
    return json.dumps(answer.json(), sort_keys=True)


async def assert_same(client: httpx.AsyncClient, app: Any, cut_offs: list[str | None]) -> None:
    for as_of in cut_offs:
        for assay, analysis_set in (("flow", "full"), ("ngs", "per-protocol")):
            for explain in (False, True):
                params = {"as_of": as_of, "assay": assay, "analysis_set": analysis_set, "explain": explain}
                expected = fresh(app, as_of=as_of, assay=assay, analysis_set=analysis_set, explain=explain)
                assert await served(client, **params) == expected, (as_of, assay, analysis_set, explain)


async def load(client: httpx.AsyncClient, start: dt.date, patients: int = 8, seed: int = 11) -> None:
    for message in generate(patients=patients, seed=seed, start=start).bundles():
        answer = await client.post("/fhir", json=message.bundle, headers=FHIR_JSON)
        assert answer.status_code == 200, answer.text


def days(*offsets: int) -> list[str | None]:
    return [(TODAY + dt.timedelta(days=n)).isoformat() for n in offsets]


@pytest.mark.parametrize("start", [PAST, FUTURE], ids=["treated-years-ago", "starting-next-month"])
async def test_every_cut_off_gets_the_answer_of_the_full_computation(
    client: httpx.AsyncClient, app: Any, start: dt.date
) -> None:
    await load(client, start)
    # Yesterday (nothing recorded yet), today, during treatment, and after every fact; twice: the second
    # round reads the rows the first one stored.
    cut_offs = [None, *days(-1, 0, 60, 200, 3000)]
    await assert_same(client, app, cut_offs)
    await assert_same(client, app, cut_offs)


class Spy:
    """Counts the patients rebuilt into derived rows and those computed live."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rebuilt: list[str] = []
        self.live: list[str] = []
        rebuild, live = summaries.rebuild, summaries._live

        def rebuilding(db: Any, protocol: Any, patients: Any, **kw: Any) -> Any:
            self.rebuilt.extend(patients)
            return rebuild(db, protocol, patients, **kw)

        def computing(db: Any, protocol: Any, patients: list[str], **kw: Any) -> Any:
            self.live.extend(patients)
            return live(db, protocol, patients, **kw)

        monkeypatch.setattr(summaries, "rebuild", rebuilding)
        monkeypatch.setattr(summaries, "_live", computing)

    def reset(self) -> None:
        self.rebuilt.clear()
        self.live.clear()


async def test_stored_rows_answer_later_requests_and_a_write_rebuilds_only_its_patient(
    client: httpx.AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await load(client, PAST)
    spy = Spy(monkeypatch)
    first = await served(client, explain=True)
    assert len(spy.rebuilt) == 8 and spy.live == []
    spy.reset()
    assert await served(client, explain=True) == first
    assert spy.rebuilt == [] and spy.live == []
    # An earlier cut-off than what a row was recorded by is computed live.
    await served(client, as_of=(TODAY - dt.timedelta(days=1)).isoformat())
    assert len(spy.live) == 8
    spy.reset()
    await client.post(
        "/fhir",
        json=trial_patient("NEW1", site="HEFEI-APCH", risk="low", arm="blinatumomab", result=0.001),
        headers=FHIR_JSON,
    )
    await served(client)
    assert len(spy.rebuilt) == 1


async def counted_results(client: httpx.AsyncClient, among: str = "denominator") -> list[str]:
    """The results behind the overall line's numerator or denominator."""
    body = (await client.get("/api/v1/endpoints/primary", params={"explain": True})).json()
    entries = body["overall"]["explain"][among]
    return [r for e in entries for r in e["resources"] if r.startswith("Observation/")]


def positive(observation: dict[str, Any]) -> dict[str, Any]:
    """The result amended to 5 % (positive whatever the assay)."""
    kept = {k: v for k, v in observation.items() if not k.startswith("value") and k != "dataAbsentReason"}
    ucum = {"value": 5, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    return kept | {"status": "amended", "valueQuantity": ucum}


async def current(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    answer = await client.get("/fhir/" + reference.split("/_history/")[0])
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_every_kind_of_write_is_reflected_in_the_next_answer(
    client: httpx.AsyncClient, app: Any
) -> None:
    await load(client, PAST)
    cut_offs = [None, *days(3000)]
    await assert_same(client, app, cut_offs)
    negative = (await counted_results(client, "numerator"))[0]
    before = json.loads(await served(client))["overall"]["n_negative"]
    amended = await current(client, negative)
    answer = await client.put(f"/fhir/Observation/{amended['id']}", json=positive(amended), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert json.loads(await served(client))["overall"]["n_negative"] == before - 1
    await assert_same(client, app, cut_offs)

    results = [r for r in await counted_results(client) if r.split("/_history/")[0] not in negative]
    assert len(results) >= 3
    withdrawn = await current(client, results[1])
    withdrawn["status"] = "entered-in-error"
    answer = await client.put(f"/fhir/Observation/{withdrawn['id']}", json=withdrawn, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    await assert_same(client, app, cut_offs)

    answer = await client.delete("/fhir/" + results[2].split("/_history/")[0])
    assert answer.status_code in (200, 204), answer.text
    await assert_same(client, app, cut_offs)

    new = trial_patient("NEW1", site="HEFEI-APCH", risk="low", arm="blinatumomab", result=0.001)
    answer = await client.post("/fhir", json=new, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    await assert_same(client, app, cut_offs)

    # The trial office moves a patient's blinatumomab start: the POST_BLINA window moves with it.
    patient = results[3 % len(results)]
    body = (await client.get("/api/v1/endpoints/primary", params={"explain": True})).json()
    owner = next(e["patient"] for e in body["overall"]["explain"]["denominator"] if patient in e["resources"])
    key = owner.split("/")[1]
    answer = await client.put(
        f"/api/v1/patients/{key}/anchors/blinatumomab-start",
        json={"date": (PAST - dt.timedelta(days=200)).isoformat(), "reason": "source documents"},
    )
    assert answer.status_code == 200, answer.text
    await assert_same(client, app, cut_offs)


async def test_an_organization_write_invalidates_every_patient(client: httpx.AsyncClient, app: Any) -> None:
    await load(client, PAST, patients=4)
    await assert_same(client, app, [None])
    db = app.state.db
    with db.read() as session:
        everyone, _ = derived.generations(session, [])
    found = (
        await client.get("/fhir/Organization", params={"identifier": "urn:mrdhub:site|HEFEI-APCH"})
    ).json()
    organization = found["entry"][0]["resource"]
    organization["name"] = "Anhui Provincial Children's Hospital (renamed)"
    answer = await client.put(
        f"/fhir/Organization/{organization['id']}", json=organization, headers=FHIR_JSON
    )
    assert answer.status_code == 200, answer.text
    with db.read() as session:
        assert derived.generations(session, [])[0] == everyone + 1
    await assert_same(client, app, [None])


async def test_a_write_committed_while_a_row_is_rebuilt_leaves_that_row_unused(
    client: httpx.AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: a reader reads the generations, a writer commits an amendment, the reader reads the
    records (already amended or not, depending on timing) and stores its rows. Whatever it read, the row
    carries the generation from before the write and is never used again."""
    await load(client, PAST, patients=4)
    results = await counted_results(client)
    amended = await current(client, results[0])
    amended = positive(amended)
    db, protocol = app.state.db, app.state.protocol
    original = summaries.load_records
    raced: list[bool] = []

    def racing(session: Any, protocol: Any, patients: list[str], **kw: Any) -> Any:
        if not raced and "recorded_by" not in kw:
            raced.append(True)
            entry = {"resource": amended, "request": {"method": "PUT", "url": f"Observation/{amended['id']}"}}
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
            process_bundle(db, bundle, max_entries=10, retries=3, checks=(), prefer="minimal")
        return original(session, protocol, patients, **kw)

    monkeypatch.setattr(summaries, "load_records", racing)
    patients = [f.patient for f in _stored(db, protocol)]
    summaries.rebuild(db, protocol, patients, day=TODAY)
    assert raced
    owner = amended["subject"]["reference"].removeprefix("Patient/")
    current_rows = {f.patient: bool(f.rows) for f in _stored(db, protocol)}
    assert current_rows == {p: p != owner for p in patients}
    monkeypatch.setattr(summaries, "load_records", original)
    await assert_same(client, app, [None])


def _stored(db: Any, protocol: Any) -> list[derived.Stored]:
    with db.read() as session:
        return derived.stored(session, derived.Analysis(summaries.PRIMARY, "full", "flow", protocol.version))


async def test_a_site_sees_the_answer_over_its_own_patients(
    client: httpx.AsyncClient, app: Any, token_for: Callable[..., Any]
) -> None:
    await load(client, PAST)
    everyone = json.loads(await served(client, explain=True))
    token = await token_for("lis-hefei-apch")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mrdhub.test", headers={"Authorization": f"Bearer {token}"}
    ) as site:
        answer = await site.get("/api/v1/endpoints/primary", params={"explain": True})
        assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["overall"]["n"] == everyone["by_site"]["HEFEI-APCH"]["n"]
    # Rows rebuilt for the site's request serve the trial office too.
    assert json.loads(await served(client, explain=True)) == everyone


async def test_rows_are_rebuilt_for_a_cut_off_that_keeps_other_facts_then_serve_it(
    client: httpx.AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await load(client, FUTURE, patients=4)
    spy = Spy(monkeypatch)
    during = days(60)[0]
    await served(client)
    assert (len(spy.rebuilt), spy.live) == (4, [])
    spy.reset()
    # The study patient starting next month has facts between today and `during`: rebuilt at that day.
    await served(client, as_of=during)
    assert spy.rebuilt and spy.live == []
    for as_of in (None, during):
        spy.reset()
        await served(client, as_of=as_of)
        assert (spy.rebuilt, spy.live) == ([], []), as_of
    await assert_same(client, app, [None, during])


# --- EFS ------------------------------------------------------------------------------------------------

EFS_COMBOS: list[tuple[str, str | None]] = [("full", None), ("full", "ngs"), ("per-protocol", "flow")]


def fresh_efs(app: Any, *, as_of: str | None, analysis_set: str, assay: str | None, explain: bool) -> str:
    """The full computation of EFS: every record read as recorded by the cut-off, every timeline rebuilt."""
    db, protocol = app.state.db, app.state.protocol
    parsed = endpoints.parse_as_of(as_of)
    result = ep.event_free_survival(
        timelines=endpoints.cohort_timelines(db, protocol, parsed),
        protocol=protocol,
        as_of=endpoints.resolve_as_of(protocol, parsed),
        analysis_set=analysis_set,
        assay=None if assay is None else Assay(assay),
    )
    return json.dumps(ep.efs_to_json(result, explain=explain), sort_keys=True)


async def served_efs(client: httpx.AsyncClient, **params: Any) -> str:
    answer = await client.get(
        "/api/v1/endpoints/efs", params={k: v for k, v in params.items() if v is not None}
    )
    assert answer.status_code == 200, answer.text
    return json.dumps(answer.json(), sort_keys=True)


async def assert_same_efs(client: httpx.AsyncClient, app: Any, cut_offs: list[str | None]) -> None:
    for as_of in cut_offs:
        for analysis_set, assay in EFS_COMBOS:
            for explain in (False, True):
                params = {"as_of": as_of, "assay": assay, "analysis_set": analysis_set, "explain": explain}
                expected = fresh_efs(
                    app, as_of=as_of, analysis_set=analysis_set, assay=assay, explain=explain
                )
                assert await served_efs(client, **params) == expected, (as_of, analysis_set, assay, explain)


@pytest.mark.parametrize("start", [PAST, FUTURE], ids=["treated-years-ago", "starting-next-month"])
async def test_every_cut_off_gets_the_efs_of_the_full_computation(
    client: httpx.AsyncClient, app: Any, start: dt.date
) -> None:
    await load(client, start, patients=12)
    cut_offs = [None, *days(-1, 0, 60, 200, 900, 3000)]
    await assert_same_efs(client, app, cut_offs)
    await assert_same_efs(client, app, cut_offs)  # from the rows the first round stored


async def test_efs_without_explain_counts_unflagged_patients_by_number_with_the_same_figures(
    client: httpx.AsyncClient, app: Any
) -> None:
    await load(client, PAST, patients=18)
    await served_efs(client, explain=True)  # stores the rows
    db, protocol = app.state.db, app.state.protocol
    cut = summaries.CutOff(TODAY, endpoints.recorded_by(protocol, None))
    items, groups = summaries.efs_items(
        db, protocol, analysis_set=protocol.analysis_sets["full"], assay=None, cut=cut, explain=False
    )
    assert groups and sum(g.n for g in groups) + sum(i.timed for i in items) > len(items)
    assert await served_efs(client) == fresh_efs(
        app, as_of=None, analysis_set="full", assay=None, explain=False
    )


async def test_efs_per_protocol_without_an_assay_is_refused_as_before(
    client: httpx.AsyncClient, app: Any
) -> None:
    await load(client, PAST)
    for _ in range(2):  # computed, then from the stored rows
        answer = await client.get("/api/v1/endpoints/efs", params={"analysis_set": "per-protocol"})
        assert answer.status_code == 422, answer.text
        assert "name the assay" in answer.text
    with pytest.raises(ep.AnalysisSetNeedsAssay):
        fresh_efs(app, as_of=None, analysis_set="per-protocol", assay=None, explain=False)


async def test_efs_rows_are_stored_with_the_primary_rows_and_a_write_rebuilds_only_its_patient(
    client: httpx.AsyncClient, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await load(client, PAST)
    spy = Spy(monkeypatch)
    await served(client)
    assert len(spy.rebuilt) == 8
    spy.reset()
    first = await served_efs(client, explain=True)
    assert (spy.rebuilt, spy.live) == ([], [])
    assert await served_efs(client, explain=True) == first
    await client.post(
        "/fhir",
        json=trial_patient("NEW1", site="HEFEI-APCH", risk="low", arm="blinatumomab", result=0.001),
        headers=FHIR_JSON,
    )
    await served_efs(client)
    assert len(spy.rebuilt) == 1 and spy.live == []


def _relapse(patient: str, onset: dt.date) -> dict[str, Any]:
    condition = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": "urn:mrdhub:concept", "code": "relapse"}]},
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
            ]
        },
        "subject": {"reference": patient},
        "onsetDateTime": onset.isoformat(),
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": condition, "request": {"method": "POST", "url": "Condition"}}],
    }


async def test_every_kind_of_write_is_reflected_in_the_next_efs(client: httpx.AsyncClient, app: Any) -> None:
    await load(client, PAST, patients=12)
    cut_offs = [None, *days(-400, 3000)]
    await assert_same_efs(client, app, cut_offs)
    body = json.loads(await served_efs(client, explain=True))
    censored = [p for p in body["study"]["patients"] if p["event"] is None]
    assert len(censored) >= 2

    # An EFS event: a relapse of a censored patient.
    events = body["study"]["events"]
    relapsed = censored[0]["patient"].split("/_history/")[0]
    answer = await client.post(
        "/fhir", json=_relapse(relapsed, PAST + dt.timedelta(days=300)), headers=FHIR_JSON
    )
    assert answer.status_code == 200, answer.text
    assert json.loads(await served_efs(client))["study"]["events"] == events + 1
    await assert_same_efs(client, app, cut_offs)

    # A death: Patient.deceasedDateTime.
    died = await current(client, censored[1]["patient"])
    died["deceasedDateTime"] = (PAST + dt.timedelta(days=500)).isoformat()
    answer = await client.put(f"/fhir/Patient/{died['id']}", json=died, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    assert json.loads(await served_efs(client))["study"]["events"] == events + 2
    await assert_same_efs(client, app, cut_offs)

    # An amendment, a result entered in error, a deletion, a new patient.
    results = await counted_results(client)
    assert len(results) >= 3
    amended = await current(client, results[0])
    answer = await client.put(f"/fhir/Observation/{amended['id']}", json=positive(amended), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    await assert_same_efs(client, app, cut_offs)
    withdrawn = await current(client, results[1])
    withdrawn["status"] = "entered-in-error"
    answer = await client.put(f"/fhir/Observation/{withdrawn['id']}", json=withdrawn, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    await assert_same_efs(client, app, cut_offs)
    answer = await client.delete("/fhir/" + results[2].split("/_history/")[0])
    assert answer.status_code in (200, 204), answer.text
    await assert_same_efs(client, app, cut_offs)
    new = trial_patient("NEW1", site="HEFEI-APCH", risk="low", arm="historical-control", result=None)
    answer = await client.post("/fhir", json=new, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    await assert_same_efs(client, app, cut_offs)


async def test_a_site_sees_the_efs_of_its_own_patients(
    client: httpx.AsyncClient, app: Any, token_for: Callable[..., Any]
) -> None:
    await load(client, PAST, patients=12)
    everyone = await served_efs(client, explain=True)
    token = await token_for("lis-hefei-apch")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://mrdhub.test", headers={"Authorization": f"Bearer {token}"}
    ) as site:
        for explain in (False, True):
            answer = await site.get("/api/v1/endpoints/efs", params={"explain": explain})
            assert answer.status_code == 200, answer.text
            patients = answer.json()["study"]["table"]
            assert patients is not None
    mine = answer.json()
    expected = json.loads(everyone)
    assert mine["study"]["n"] + mine["control"]["n"] < expected["study"]["n"] + expected["control"]["n"]
    assert {p["patient"] for p in mine["study"]["patients"]} < {
        p["patient"] for p in expected["study"]["patients"]
    }
    assert await served_efs(client, explain=True) == everyone
