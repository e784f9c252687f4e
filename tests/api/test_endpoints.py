"""Issue 6 through the API: a small cohort loaded through /fhir whose endpoint numbers are checked by hand."""

import datetime as dt
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.measurereport import MeasureReport
from scipy.stats import beta

from tests.api.test_eligibility import coded
from tests.api.test_timeline import blinatumomab, mrd, organization, specimen, window_phase
from tests.builders import bundle, patient, post, urn
from tests.conftest import FHIR_JSON

pytestmark = pytest.mark.anyio
SITE = "urn:mrdhub:site"
STUDY = {
    "resourceType": "ResearchStudy",
    "status": "active",
    "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT06607419"}],
}


def trial_patient(mrn: str, *, site: str, risk: str, arm: str, result: float | None) -> dict[str, Any]:
    """Induction day 1 = 2025-03-01; study: blinatumomab 25 Mar - 7 Apr and a POST_BLINA marrow on 9 Apr;
    control: no blinatumomab and a D46 marrow on 15 Apr."""
    org, p, study, s = urn(), urn(), urn(), urn()
    entries = [
        post(organization(site), org, if_none_exist=f"identifier={SITE}|{site}"),
        post(patient(mrn, organization=org), p),
        post(STUDY, study, if_none_exist="identifier=https://clinicaltrials.gov|NCT06607419"),
        post(
            {
                "resourceType": "ResearchSubject",
                "status": "on-study",
                "assignedArm": arm,
                "identifier": [{"system": "urn:test:subject", "value": mrn}],
                "study": {"reference": study},
                "individual": {"reference": p},
                "period": {"start": "2025-03-21"},
            }
        ),
        post(
            coded("provisional-risk", risk, p) | {"identifier": [{"system": "urn:test:risk", "value": mrn}]}
        ),
        post(window_phase(p, "2025-03-01", ident=f"{mrn}-W")),
        post(specimen(p, f"{mrn}-S"), s),
    ]
    when = "2025-04-09T09:00:00+08:00" if arm == "blinatumomab" else "2025-04-15T09:00:00+08:00"
    if arm == "blinatumomab":
        entries += [
            post(blinatumomab(p, "2025-03-25T10:00:00+08:00", "2025-04-01T10:00:00+08:00", f"{mrn}-B1")),
            post(blinatumomab(p, "2025-04-01T10:00:00+08:00", "2025-04-07T10:00:00+08:00", f"{mrn}-B2")),
        ]
    if result is not None:
        entries.append(post(mrd(p, f"{mrn}-R", when, result, specimen_ref=s, cells=800_000)))
    return bundle(*entries)


COHORT = [
    ("S1", "SHANGHAI-SCMC", "intermediate", "blinatumomab", 0.005),
    ("S2", "SHANGHAI-SCMC", "low", "blinatumomab", 0.002),
    ("S3", "HEFEI-APCH", "intermediate", "blinatumomab", 0.05),
    ("S4", "FUZHOU-FCH", "low", "blinatumomab", None),
    ("C1", "SHANGHAI-SCMC", "intermediate", "historical-control", 0.001),
    ("C2", "HEFEI-APCH", "low", "historical-control", 0.3),
]


@pytest.fixture
async def cohort(client: httpx.AsyncClient) -> None:
    for mrn, site, risk, arm, result in COHORT:
        answer = await client.post(
            "/fhir", json=trial_patient(mrn, site=site, risk=risk, arm=arm, result=result), headers=FHIR_JSON
        )
        assert answer.status_code == 200, answer.text


async def primary(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    answer = await client.get("/api/v1/endpoints/primary", params={"as_of": "2026-12-31", **params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def clopper_pearson(x: int, n: int) -> list[float]:
    lower = 0.0 if x == 0 else float(beta.ppf(0.025, x, n - x + 1))
    upper = 1.0 if x == n else float(beta.ppf(0.975, x + 1, n - x))
    return [round(lower, 6), round(upper, 6)]


async def test_full_analysis_set_counts_a_missing_result_as_not_negative(
    client: httpx.AsyncClient, cohort: None
) -> None:
    body = await primary(client, assay="flow", analysis_set="full")
    overall = body["overall"]
    assert (overall["n_negative"], overall["n"], overall["imputed_not_negative"]) == (2, 4, 1)
    assert overall["rate"] == 0.5
    assert overall["ci95"] == pytest.approx(clopper_pearson(2, 4), abs=1e-6)
    assert overall["p0"] == 0.5
    assert overall["p0_source"] == "illustrative, not a published rate"
    assert overall["p_value_one_sided"] == pytest.approx(11 / 16)  # P(X >= 2 | n = 4, p = 0.5)
    assert body["as_of"] == "2026-12-31"
    assert body["protocol_version"].startswith("nct06607419@")


async def test_per_protocol_set_keeps_only_evaluable_results(client: httpx.AsyncClient, cohort: None) -> None:
    overall = (await primary(client, assay="flow", analysis_set="per-protocol"))["overall"]
    assert (overall["n_negative"], overall["n"], overall["imputed_not_negative"]) == (2, 3, 0)
    assert overall["ci95"] == pytest.approx(clopper_pearson(2, 3), abs=1e-6)


async def test_results_by_site_and_stratum(client: httpx.AsyncClient, cohort: None) -> None:
    body = await primary(client, assay="flow", analysis_set="full")
    by_site = {site: (line["n_negative"], line["n"]) for site, line in _lines(body["by_site"])}
    assert by_site["SHANGHAI-SCMC"] == (2, 2)
    assert by_site["HEFEI-APCH"] == (0, 1)
    assert by_site["FUZHOU-FCH"] == (0, 1)
    ningbo = dict(_lines(body["by_site"]))["NINGBO-NWCH"]
    assert ningbo["n"] == 0
    assert ningbo["rate"] is None
    assert ningbo["reason"]
    by_stratum = {s: (line["n_negative"], line["n"]) for s, line in _lines(body["by_stratum"])}
    assert by_stratum["intermediate"] == (1, 2)
    assert by_stratum["low"] == (1, 2)


def _lines(value: Any) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict):
        return list(value.items())
    return [(item.get("site") or item.get("stratum") or item.get("name"), item) for item in value]


async def test_control_patients_are_compared_with_fishers_exact_test(
    client: httpx.AsyncClient, cohort: None
) -> None:
    control = (await primary(client, assay="flow", analysis_set="full"))["control"]
    text = str(control)
    assert "fisher" in text
    line = control.get("overall", control)
    assert (line["n_negative"], line["n"]) == (1, 2)


async def test_an_entered_in_error_result_changes_the_rate(client: httpx.AsyncClient, cohort: None) -> None:
    found = (await client.get("/fhir/Observation", params={"identifier": "urn:test:result|S1-R"})).json()
    withdrawn = found["entry"][0]["resource"] | {"status": "entered-in-error"}
    answer = await client.put(f"/fhir/Observation/{withdrawn['id']}", json=withdrawn, headers=FHIR_JSON)
    assert answer.status_code == 200
    overall = (await primary(client, assay="flow", analysis_set="full"))["overall"]
    assert (overall["n_negative"], overall["n"], overall["imputed_not_negative"]) == (1, 4, 2)


async def test_the_same_cut_off_gives_byte_identical_answers_after_new_data(
    client: httpx.AsyncClient, cohort: None
) -> None:
    cut_off = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat(timespec="seconds")
    await _wait_past(cut_off)
    before = await client.get("/api/v1/endpoints/primary", params={"as_of": cut_off, "explain": "true"})
    late = trial_patient("S5", site="NINGBO-NWCH", risk="low", arm="blinatumomab", result=0.001)
    assert (await client.post("/fhir", json=late, headers=FHIR_JSON)).status_code == 200
    after = await client.get("/api/v1/endpoints/primary", params={"as_of": cut_off, "explain": "true"})
    assert before.content == after.content
    now = await primary(client, assay="flow", analysis_set="full")
    assert now["overall"]["n"] == 5


async def _wait_past(instant: str) -> None:
    import asyncio

    while dt.datetime.now(dt.UTC) <= dt.datetime.fromisoformat(instant):
        await asyncio.sleep(0.05)


async def test_explain_names_the_patients_behind_each_number(client: httpx.AsyncClient, cohort: None) -> None:
    overall = (await primary(client, assay="flow", analysis_set="full", explain="true"))["overall"]["explain"]
    assert len(overall["numerator"]) == 2
    assert len(overall["denominator"]) == 4
    assert len(overall["imputed"]) == 1
    assert "Observation/" in str(overall["numerator"])


async def test_the_primary_endpoint_as_a_fhir_measure_report(client: httpx.AsyncClient, cohort: None) -> None:
    answer = await client.get(
        "/fhir/Measure/primary-flow/$evaluate-measure", params={"periodEnd": "2026-12-31"}
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    MeasureReport.model_validate(report)
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in report["group"][0]["population"]}
    assert counts == {"initial-population": 4, "denominator": 4, "numerator": 2}
    assert report["group"][0]["measureScore"]["value"] == 0.5
    unknown = await client.get("/fhir/Measure/primary-pcr/$evaluate-measure")
    assert unknown.status_code == 422
    assert unknown.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/endpoints/mrd-response",
        "/api/v1/endpoints/efs",
        "/api/v1/endpoints/adverse-events",
        "/api/v1/endpoints/costs",
        "/api/v1/consort",
    ],
)
async def test_every_endpoint_answers_with_its_cut_off_and_protocol_version(
    client: httpx.AsyncClient, cohort: None, path: str
) -> None:
    answer = await client.get(path, params={"as_of": "2026-12-31"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["as_of"] == "2026-12-31"
    assert body["protocol_version"].startswith("nct06607419@")


async def test_bad_queries_are_named(client: httpx.AsyncClient) -> None:
    for params, parameter in (
        ({"assay": "pcr"}, "assay"),
        ({"analysis_set": "everyone"}, "analysis_set"),
        ({"as_of": "yesterday"}, "as_of"),
    ):
        answer = await client.get("/api/v1/endpoints/primary", params=params)
        assert answer.status_code == 422, params
        assert answer.json()["parameter"] == parameter


async def test_an_empty_trial_gives_null_rates_with_a_reason(client: httpx.AsyncClient) -> None:
    overall = (await primary(client, assay="ngs"))["overall"]
    assert overall["n"] == 0
    assert overall["rate"] is None
    assert overall["reason"]


async def patient_ref(client: httpx.AsyncClient, mrn: str) -> str:
    found = (
        await client.get(
            "/fhir/Patient", params={"identifier": f"urn:oid:2.16.840.1.113883.2.4.6.3.test|{mrn}"}
        )
    ).json()
    return f"Patient/{found['entry'][0]['resource']['id']}"


def adverse_event(subject: str, ident: str, term: str, grade: int, date: str) -> dict[str, Any]:
    return {
        "resourceType": "AdverseEvent",
        "actuality": "actual",
        "identifier": {"system": "urn:test:ae", "value": ident},
        "event": {"text": term},
        "subject": {"reference": subject},
        "date": f"{date}T10:00:00+08:00",
        "extension": [{"url": "urn:mrdhub:ctcae-grade", "valueInteger": grade}],
    }


def charge(subject: str, ident: str, amount: str, date: str) -> dict[str, Any]:
    return {
        "resourceType": "ChargeItem",
        "status": "billed",
        "identifier": [{"system": "urn:test:charge", "value": ident}],
        "code": {"text": "inpatient care"},
        "subject": {"reference": subject},
        "occurrenceDateTime": f"{date}T10:00:00+08:00",
        "priceOverride": {"value": float(amount), "currency": "CNY"},
    }


@pytest.fixture
async def follow_up(client: httpx.AsyncClient, cohort: None) -> None:
    """S1: a CRS (grade 3) inside the AE window and febrile neutropenia before day 19; charges on day 5,
    day 184 (31 Aug, the last day of 6 calendar months) and day 185 (1 Sep). S3 relapses. S2 withdraws."""
    s1, s3 = [await patient_ref(client, m) for m in ("S1", "S3")]
    entries = [
        post(adverse_event(s1, "AE-1", "Cytokine release syndrome", 3, "2025-03-26")),
        post(adverse_event(s1, "AE-2", "Febrile neutropenia", 2, "2025-03-10")),
        post(charge(s1, "C-1", "1000.50", "2025-03-05")),
        post(charge(s1, "C-2", "500", "2025-08-31")),
        post(charge(s1, "C-3", "700", "2025-09-01")),
        post(
            {
                "resourceType": "Condition",
                "code": {"coding": [{"system": "urn:mrdhub:concept", "code": "relapse"}]},
                "verificationStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                            "code": "confirmed",
                        }
                    ]
                },
                "subject": {"reference": s3},
                "onsetDateTime": "2025-10-01",
            }
        ),
    ]
    answer = await client.post("/fhir", json=bundle(*entries), headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text
    subject = (
        await client.get("/fhir/ResearchSubject", params={"identifier": "urn:test:subject|S2"})
    ).json()["entry"][0]["resource"]
    withdrawn = subject | {"status": "withdrawn"}
    assert (
        await client.put(f"/fhir/ResearchSubject/{subject['id']}", json=withdrawn, headers=FHIR_JSON)
    ).status_code == 200


async def endpoint(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/{path}", params={"as_of": "2026-12-31"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_adverse_events_count_only_inside_the_window(
    client: httpx.AsyncClient, follow_up: None
) -> None:
    body = await endpoint(client, "endpoints/adverse-events")
    crs = body["by_term"]["cytokine release syndrome"]["study"]
    assert (crs["with_event"], crs["grade_3_or_more"]) == (1, 1)
    assert "febrile neutropenia" not in body["by_term"]  # day 10: before day 19
    assert body["special_interest"]["cytokine release syndrome"]["study"]["with_event"] == 1


async def test_costs_sum_six_calendar_months_from_induction_day_1(
    client: httpx.AsyncClient, follow_up: None
) -> None:
    body = await endpoint(client, "endpoints/costs")
    assert body["currency"] == "CNY"
    study = body["study"]
    assert study["n"] == 1  # patients without charges are excluded, not counted as 0
    assert study["median"] == 1500.5  # day 5 and day 184 count; day 185 does not


async def test_efs_counts_the_relapse_and_keeps_the_withdrawn_patient(
    client: httpx.AsyncClient, follow_up: None
) -> None:
    body = await endpoint(client, "endpoints/efs")
    assert (body["study"]["n"], body["study"]["events"]) == (4, 1)
    assert body["control"]["n"] == 2
    assert "log_rank" in body
    primary_full = (await primary(client, assay="flow", analysis_set="full"))["overall"]
    assert primary_full["n"] == 4  # intention to treat: the withdrawn patient stays in the full set


async def test_consort_counts_every_step(client: httpx.AsyncClient, cohort: None) -> None:
    body = await endpoint(client, "consort")
    steps = {s["step"]: s["n"] for s in body["steps"]}
    assert steps["enrolled"] == 4
    assert body["historical_controls_enrolled"] == 2
