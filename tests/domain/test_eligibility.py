"""Eligibility for NCT06607419 per criterion and overall (PROTOCOL.md section 4; issue 5).

Each table changes one thing about an otherwise eligible child (tests/domain/eligibility_records.py):
born 2018-04-01, ALL with B-immunophenotype, provisional intermediate risk, D19 flow MRD 0.05 %, sIgM
negative, CNS1, window phase (induction day 1) from 2025-03-01, consent active; screened on 2025-04-02.
"""

from __future__ import annotations

import datetime as dt

import pytest

from app.domain.eligibility import CriterionStatus, FlagKind, Overall
from app.domain.protocol import CriterionKind
from app.domain.record import ConditionFact, ConsentFact, ExposureFact, PatientRecord
from app.domain.timepoints import ClinicalDate
from tests.domain.eligibility_records import (
    AS_OF,
    D46,
    OTHER_TRIAL,
    PROTOCOL,
    adding,
    condition,
    consent,
    date,
    enrolment,
    evaluate,
    exposure,
    flow,
    observation,
    patient,
    window_phase,
    without,
)

MET, NOT_MET, UNKNOWN = CriterionStatus.MET, CriterionStatus.NOT_MET, CriterionStatus.UNKNOWN


def status_of(criterion: str, record: PatientRecord, as_of: dt.date | str = AS_OF) -> CriterionStatus:
    return evaluate(record, as_of).criterion(criterion).status


# --- inclusion 1: age ---------------------------------------------------------------------------------------

AGE = [
    # born                          screened      status    why
    ("2025-01-15",                  "2025-02-15", NOT_MET,  "exactly 1 month old: not older than 1 month"),
    ("2025-01-15",                  "2025-02-16", MET,      "1 month and 1 day"),
    ("2025-01-31",                  "2025-02-28", NOT_MET,  "1 month after 31 January is 28 February"),
    ("2025-01-31",                  "2025-03-01", MET,      "one day more"),
    ("2007-04-02",                  "2025-04-01", MET,      "the day before the 18th birthday"),
    ("2007-04-02",                  "2025-04-02", NOT_MET,  "on the 18th birthday"),
    ("2008-02-29",                  "2026-02-27", MET,      "29 February birth, the day before 28 February"),
    ("2008-02-29",                  "2026-02-28", NOT_MET,  "29 February birth is 18 on 28 February"),
    ("2008-02-29",                  "2026-03-01", NOT_MET,  "and stays 18 on 1 March"),
    ("2006-02-28",                  "2024-02-28", NOT_MET,  "18 on 28 February of a leap year"),
    ("2000",                        "2025-04-02", NOT_MET,  "year-only birth date that decides: too old"),
    ("2020",                        "2025-04-02", MET,      "year-only birth date that decides: eligible"),
    ("2007",                        "2025-04-02", UNKNOWN,  "born in 2007: 17 or 18 depending on the day"),
    ("2025-02",                     "2025-03-15", UNKNOWN,  "born in February: 1 month old or not yet"),
    ("2024-12",                     "2025-02-10", MET,      "born in December: older than 1 month anyway"),
    ("2007-04-01T20:00:00-04:00",   "2025-04-01", MET,      "born 2 April in Shanghai, the site's zone"),
    (None,                          "2025-04-02", UNKNOWN,  "no birth date"),
]  # fmt: skip


@pytest.mark.parametrize(("born", "screened", "expected"), [pytest.param(*r[:3], id=r[3]) for r in AGE])
def test_age_older_than_1_month_and_younger_than_18_years(
    born: str | None, screened: str, expected: CriterionStatus
) -> None:
    assert status_of("age", patient(birth=born), screened) is expected


def test_the_age_reason_names_the_days_the_limits_fall_on() -> None:
    leap = evaluate(patient(birth="2008-02-29"), "2026-02-27").criterion("age")
    young = evaluate(patient(birth="2025-01-15"), "2025-02-15").criterion("age")

    assert "younger than 18 years until 2026-02-27" in leap.reason
    assert "older than 1 month from 2025-02-16" in young.reason
    assert leap.evidence == ("Patient/1/_history/1",)
    assert leap.reading is not None and "art. 202" in leap.reading


# --- inclusion 2 and 3: morphology and immunophenotype ------------------------------------------------------

MORPHOLOGY = [
    # diagnoses                               morphology  status   why
    ((condition("all"),),                     "ALL",      MET,     "both"),
    ((),                                      "ALL",      MET,     "morphology alone"),
    ((condition("all"),),                     None,       MET,     "a confirmed ALL diagnosis alone"),
    ((condition("down-syndrome"),),           "other",    NOT_MET, "morphology shows another disease"),
    ((condition("all", confirmed=False),),    None,       UNKNOWN, "ALL diagnosis not confirmed"),
    ((condition("all", refuted=True),),       None,       UNKNOWN, "ALL diagnosis refuted"),
    ((condition("down-syndrome"),),           None,       UNKNOWN, "no ALL recorded: not a finding"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("diagnoses", "morphology", "expected"), [pytest.param(*r[:3], id=r[3]) for r in MORPHOLOGY]
)
def test_all_confirmed_by_bone_marrow_morphology(
    diagnoses: tuple[ConditionFact, ...], morphology: str | None, expected: CriterionStatus
) -> None:
    record = without(patient(conditions=diagnoses), "bm-morphology")
    if morphology is not None:
        record = adding(record, observation("bm-morphology", morphology))

    assert status_of("all-morphology", record) is expected


def test_an_unrecorded_all_diagnosis_asks_for_the_data_that_would_confirm_it() -> None:
    record = without(patient(conditions=(condition("down-syndrome"),)), "bm-morphology")

    result = evaluate(record).criterion("all-morphology")

    assert result.status is UNKNOWN
    assert result.missing == (
        "a diagnosis of Acute lymphoblastic leukaemia",
        "a Bone marrow morphology result (ALL / other) dated on or before 2025-04-02",
    )


IMMUNOPHENOTYPE = [
    # immunophenotype   status
    ("B-ALL",           MET),
    ("T-ALL",           NOT_MET),
    (None,              UNKNOWN),
]  # fmt: skip


@pytest.mark.parametrize(("immunophenotype", "expected"), IMMUNOPHENOTYPE)
def test_b_cell_immunophenotype(immunophenotype: str | None, expected: CriterionStatus) -> None:
    record = without(patient(), "immunophenotype")
    if immunophenotype is not None:
        record = adding(record, observation("immunophenotype", immunophenotype))

    assert status_of("b-immunophenotype", record) is expected


# --- inclusion 4: D19 MRD by provisional risk ---------------------------------------------------------------

D19_MRD = [
    # provisional risk  D19 flow MRD                         status    why
    ("low",             "0.1 %",                             MET,      "low risk needs >= 0.1 %"),
    ("low",             "0.09 %",                            NOT_MET,  "just below 0.1 %"),
    ("low",             "0.05 %",                            NOT_MET,  "not met although >= 0.01 %"),
    ("low",             "<0.05 %",                           NOT_MET,  "below 0.05 % is below 0.1 %"),
    ("intermediate",    "0.01 %",                            MET,      "intermediate risk needs >= 0.01 %"),
    ("intermediate",    "0.0099 %",                          NOT_MET,  "just below 0.01 %"),
    ("intermediate",    "<0.01 %",                           NOT_MET,  "below 0.01 %"),
    ("intermediate",    "not detected, sensitivity 0.01 %",  NOT_MET,  "not detected at 0.01 %"),
    ("intermediate",    "<0.05 %",                           UNKNOWN,  "below 0.05 % may still be >= 0.01 %"),
    ("intermediate",    "not detected",                      UNKNOWN,  "not detected, sensitivity unknown"),
    ("intermediate",    "0.5 % (haemodiluted)",              UNKNOWN,  "D19 not evaluable"),
    ("intermediate",    None,                                UNKNOWN,  "no D19 result yet"),
    ("high",            "1 %",                               NOT_MET,  "high risk is not eligible"),
    (None,              "1 %",                               UNKNOWN,  "provisional risk not recorded"),
]  # fmt: skip


@pytest.mark.parametrize(("risk", "d19", "expected"), [pytest.param(*r[:3], id=r[3]) for r in D19_MRD])
def test_d19_mrd_by_provisional_risk(risk: str | None, d19: str | None, expected: CriterionStatus) -> None:
    assert status_of("d19-mrd", patient(risk=risk, d19=d19)) is expected


def test_the_d19_reason_shows_the_risk_the_result_and_the_threshold() -> None:
    result = evaluate(patient(risk="low", d19="0.05 %")).criterion("d19-mrd")

    assert result.reason == (
        "Provisional risk group (CCCG-ALL-2020): low (Observation/risk/_history/1); "
        "D19 flow MRD 0.05 % (Observation/d19/_history/1), not >= 0.1 %"
    )
    assert result.evidence == ("Observation/risk/_history/1", "Observation/d19/_history/1")


def test_conflicting_provisional_risks_leave_d19_mrd_unknown() -> None:
    record = adding(patient(risk="low", d19="0.5 %"), observation("provisional-risk", "intermediate"))

    result = evaluate(record).criterion("d19-mrd")

    assert result.status is UNKNOWN
    assert "recorded differently" in result.reason


def test_a_missing_d19_result_says_which_window_would_decide() -> None:
    answer = evaluate(patient(d19=None))

    assert answer.overall is Overall.INCOMPLETE
    assert answer.missing == (
        "d19-mrd: a Flow cytometry MRD result (Bone marrow specimen) at Day 19 of induction, "
        "2025-03-17..2025-03-22",
    )


def test_d19_mrd_without_induction_day_1_asks_for_it() -> None:
    record = patient(exposures=())

    result = evaluate(record).criterion("d19-mrd")

    assert result.status is UNKNOWN
    assert result.missing[0].startswith("Induction day 1")


# --- inclusion 5: consent -----------------------------------------------------------------------------------

CONSENT = [
    # consents                                                      status    why
    ((consent("active", "2025-03-25"),),                            MET,      "active before screening"),
    ((consent("active", "2025-04-02"),),                            MET,      "active on the screening day"),
    ((consent("rejected", "2025-03-25"),),                          NOT_MET,  "declined"),
    ((consent("active", "2025-03-01"), consent("inactive", "2025-03-20")),
                                                                    NOT_MET,  "withdrawn later"),
    ((consent("proposed", "2025-03-25"),),                          UNKNOWN,  "not yet decided"),
    ((consent("active", "2025-04-03"),),                            UNKNOWN,  "signed after screening"),
    ((consent("active", None),),                                    UNKNOWN,  "undated"),
    ((),                                                            UNKNOWN,  "no consent recorded"),
]  # fmt: skip


@pytest.mark.parametrize(("consents", "expected"), [pytest.param(*r[:2], id=r[2]) for r in CONSENT])
def test_informed_consent_accepted(consents: tuple[object, ...], expected: CriterionStatus) -> None:
    record = patient(consents=())
    assert status_of("consent", adding(record, *consents)) is expected


# --- exclusions read off diagnoses --------------------------------------------------------------------------

CML, DOWN, SECONDARY = "cml-evolved", "down-syndrome-or-congenital-disease", "secondary-leukemia"
IMMUNO, HEART = "immunodeficiency-or-metabolic-disease", "congenital-heart-disease-with-insufficiency"
EPILEPSY = "epilepsy-or-recent-convulsion"

DIAGNOSES = [
    # criterion  diagnoses besides ALL                                                          status
    (CML,        (condition("cml"),),                                                           MET),
    (CML,        (),                                                                            NOT_MET),
    (DOWN,       (condition("down-syndrome", None),),                                           MET),
    (DOWN,       (condition("down-syndrome", refuted=True),),                                   NOT_MET),
    (DOWN,       (condition("down-syndrome", confirmed=False),),                                UNKNOWN),
    (DOWN,       (condition("down-syndrome", "2025-04-10"),),                                   NOT_MET),
    (DOWN,       (condition("congenital-disease-with-organ-dysfunction"),),                     MET),
    (SECONDARY,  (condition("secondary-leukemia"),),                                            MET),
    (SECONDARY,  (),                                                                            NOT_MET),
    (IMMUNO,     (condition("metabolic-disease"),),                                             MET),
    (IMMUNO,     (condition("congenital-immunodeficiency"),),                                   MET),
    (IMMUNO,     (),                                                                            NOT_MET),
    (HEART,      (condition("congenital-heart-disease"), condition("cardiac-insufficiency")),  MET),
    (HEART,      (condition("congenital-heart-disease"),),                                      NOT_MET),
    (HEART,      (condition("congenital-heart-disease"),
                  condition("cardiac-insufficiency", confirmed=False)),                         UNKNOWN),
    (EPILEPSY,   (condition("epilepsy", "2019-06-01"),),                                        MET),
]  # fmt: skip


def _said(criterion: str, diagnoses: tuple[ConditionFact, ...], expected: CriterionStatus) -> str:
    facts = [
        f"{c.concept}{'' if c.confirmed else ' unconfirmed'}{' refuted' if c.refuted else ''}"
        f"{'' if c.onset is None else f' {c.onset.year}-{c.onset.month:02d}-{c.onset.day:02d}'}"
        for c in diagnoses
    ]
    return f"{criterion} with {', '.join(facts) or 'no other diagnosis'} is {expected}"


@pytest.mark.parametrize(
    ("criterion", "diagnoses", "expected"), [pytest.param(*r, id=_said(*r)) for r in DIAGNOSES]
)
def test_exclusions_read_off_the_diagnoses(
    criterion: str, diagnoses: tuple[ConditionFact, ...], expected: CriterionStatus
) -> None:
    record = adding(patient(), *diagnoses)
    assert status_of(criterion, record) is expected


CONDITION_EXCLUSIONS = [
    c.id for c in PROTOCOL.eligibility if c.kind is CriterionKind.EXCLUSION and c.conditions is not None
]


@pytest.mark.parametrize("criterion", CONDITION_EXCLUSIONS)
def test_without_any_diagnosis_on_record_a_diagnosis_exclusion_is_unknown(criterion: str) -> None:
    result = evaluate(patient(conditions=())).criterion(criterion)

    assert result.status is UNKNOWN
    assert "the patient's diagnoses (Condition)" in result.missing[0]


def test_no_matching_diagnosis_reads_as_not_recorded() -> None:
    result = evaluate(patient()).criterion("cml-evolved")

    assert result.reason == "no Chronic myeloid leukaemia recorded"


# --- exclusions read off coded results ----------------------------------------------------------------------

SIGM, CNS, HIGH_RISK = "sigm-positive", "cns-involvement", "initial-high-risk"
CODED_CONCEPT = {SIGM: "sigm", CNS: "cns-status", HIGH_RISK: "provisional-risk"}

CODED = [
    # criterion  results ("value date"; ? = unmapped code)         status   why
    (SIGM,       ("positive 2025-02-25",),                         MET,     "sIgM+"),
    (SIGM,       ("negative 2025-02-25",),                         NOT_MET, "sIgM-"),
    (SIGM,       (),                                               UNKNOWN, "no sIgM result"),
    (SIGM,       ("? 2025-02-25",),                                UNKNOWN, "a code not mapped to a value"),
    (SIGM,       ("negative 2025-02-25", "positive 2025-04-05"),   NOT_MET, "positive only after screening"),
    (CNS,        ("CNS3 2025-02-25",),                             MET,     "CNS3"),
    (CNS,        ("CNS2 2025-02-25",),                             NOT_MET, "CNS2"),
    (CNS,        ("CNS3 2025-02-25", "CNS1 2025-03-20"),           MET,     "not hidden by a later CNS1"),
    (CNS,        (),                                               UNKNOWN, "no CNS status"),
    (HIGH_RISK,  ("high 2025-02-25",),                             MET,     "high risk"),
    (HIGH_RISK,  ("low undated",),                                 NOT_MET, "low risk, undated"),
    (HIGH_RISK,  (),                                               UNKNOWN, "no provisional risk"),
]  # fmt: skip


CODED_CONCEPT = {
    "sigm-positive": "sigm",
    "cns-involvement": "cns-status",
    "initial-high-risk": "provisional-risk",
}


@pytest.mark.parametrize(
    ("criterion", "results", "expected"), [pytest.param(*r[:3], id=f"{r[0]}: {r[3]}") for r in CODED]
)
def test_exclusions_read_off_coded_results(
    criterion: str, results: tuple[str, ...], expected: CriterionStatus
) -> None:
    concept = CODED_CONCEPT[criterion]
    facts = []
    for result in results:
        value, effective = result.split(" ")
        code = None if value == "?" else value
        facts.append(observation(concept, code, None if effective == "undated" else effective))

    assert status_of(criterion, adding(without(patient(), concept), *facts)) is expected


def test_high_risk_fails_d19_mrd_and_meets_the_high_risk_exclusion() -> None:
    answer = evaluate(patient(risk="high", d19="1 %"))

    assert answer.overall is Overall.INELIGIBLE
    assert answer.ineligible_by == ("d19-mrd", "initial-high-risk")


# --- exclusion 6: epilepsy or convulsion within the last month ----------------------------------------------

CONVULSION = [
    # convulsion onset             status    why
    ("2025-03-13",                 MET,      "20 days before screening"),
    ("2025-02-21",                 NOT_MET,  "40 days before screening"),
    ("2025-03-02",                 MET,      "exactly 1 month before: inside"),
    ("2025-03-01",                 NOT_MET,  "1 month and 1 day before"),
    ("2025-04-02",                 MET,      "on the screening day"),
    ("2025-04-05",                 NOT_MET,  "after screening: ignored"),
    ("2025-03",                    UNKNOWN,  "month only: may be within the month"),
    (None,                         UNKNOWN,  "undated convulsion"),
]  # fmt: skip


@pytest.mark.parametrize(("onset", "expected"), [pytest.param(*r[:2], id=r[2]) for r in CONVULSION])
def test_convulsion_within_the_last_month(onset: str | None, expected: CriterionStatus) -> None:
    record = adding(patient(), condition("convulsion", onset))
    assert status_of(EPILEPSY, record) is expected


def test_a_refuted_convulsion_does_not_count() -> None:
    record = adding(patient(), condition("convulsion", "2025-03-13", refuted=True))
    assert status_of(EPILEPSY, record) is NOT_MET


# --- exclusion 9: prior treatment before induction day 1 (2025-03-01) ---------------------------------------


def steroid(start: str, end: str | None) -> ExposureFact:
    """Glucocorticoid from `start` to `end` ("ongoing": still running; None: end not recorded)."""
    if end == "ongoing":
        return exposure("glucocorticoid", start, None, ongoing=True)
    return exposure("glucocorticoid", start, end)


def tki(start: str, end: str) -> ExposureFact:
    return exposure("abl-tki", start, end)


def chemo(start: str | None, end: str | None = "same day") -> ExposureFact:
    return exposure("chemotherapy", start, None if start is None else end)


def radiotherapy(on: str, *also: str) -> ExposureFact:
    return exposure("radiotherapy", on, also=also)


PRIOR_TREATMENT = [
    # besides the window phase from 2025-03-01                   status    why
    ((),                                                          NOT_MET,  "none recorded"),
    ((steroid("2025-02-15", "2025-02-27"),),                      NOT_MET,  "glucocorticoid 13 days"),
    ((steroid("2025-02-15", "2025-02-28"),),                      MET,      "glucocorticoid 14 days"),
    ((steroid("2025-02-15", "2025-02-24"),
      steroid("2025-02-20", "2025-02-27")),                       NOT_MET,  "overlapping: 13 days, not 18"),
    ((steroid("2025-01-20", "2025-02-05"),),                      NOT_MET,  "17 days, 5 within the month"),
    ((steroid("2025-02-20", "2025-03-10"),),                      NOT_MET,  "9 days before day 1 only"),
    ((steroid("2025-02-10", "ongoing"),),                         MET,      "still running: 19 days"),
    ((steroid("2025-02-10", None),),                              UNKNOWN,  "end not recorded: 1 to 19 days"),
    ((steroid("2025-02", "2025-02"),),                            UNKNOWN,  "month-only dates"),
    ((tki("2025-02-21", "2025-02-27"),),                          NOT_MET,  "ABL-TKI 7 days"),
    ((tki("2025-02-21", "2025-02-28"),),                          MET,      "ABL-TKI 8 days"),
    ((chemo("2024-12-01"),),                                      MET,      "chemo 3 months before day 1"),
    ((chemo("2024-11-30"),),                                      NOT_MET,  "3 months and 1 day before"),
    ((chemo(None),),                                              UNKNOWN,  "undated chemotherapy"),
    ((radiotherapy("2025-01-10"),),                               MET,      "radiotherapy"),
    ((radiotherapy("2025-01-10", "emergency-airway-radiotherapy"),),
                                                                  NOT_MET,  "emergency airway RT excepted"),
    ((exposure("emergency-airway-radiotherapy", "2025-01-10"),),  NOT_MET,  "emergency airway RT alone"),
    ((chemo("2025-03-08", "2025-03-29"),
      steroid("2025-03-08", "2025-03-29")),                       NOT_MET,  "the protocol's own induction"),
]  # fmt: skip


@pytest.mark.parametrize(("exposures", "expected"), [pytest.param(*r[:2], id=r[2]) for r in PRIOR_TREATMENT])
def test_prior_treatment_before_induction_day_1(
    exposures: tuple[ExposureFact, ...], expected: CriterionStatus
) -> None:
    record = patient(exposures=(window_phase(), *exposures))
    assert status_of("prior-treatment", record) is expected


def test_the_window_phase_steroid_is_the_induction_not_prior_treatment() -> None:
    result = evaluate(patient()).criterion("prior-treatment")

    assert result.status is NOT_MET
    assert (
        "no Glucocorticoid recorded in 2025-02-01..2025-02-28, the 1 month before Induction day 1"
        in result.reason
    )


def test_prior_treatment_reason_counts_the_days() -> None:
    dexamethasone = exposure("glucocorticoid", "2025-02-15", "2025-02-28", ref="dex")
    record = patient(exposures=(window_phase(), dexamethasone))

    result = evaluate(record).criterion("prior-treatment")

    assert result.reason.startswith("Glucocorticoid on 14 days in 2025-02-01..2025-02-28")
    assert result.reason.endswith(", at least 14 days")
    assert result.evidence == ("MedicationAdministration/dex/_history/1",)


WITHOUT_DAY1 = [
    # exposures (no window phase recorded)    status    why
    ((chemo("2024-06-01"),),                  NOT_MET,  "nothing in the 3 months before screening"),
    ((chemo("2025-03-10"),),                  UNKNOWN,  "may be the induction itself"),
    ((),                                      UNKNOWN,  "no medication history at all"),
]  # fmt: skip


@pytest.mark.parametrize(("exposures", "expected"), [pytest.param(*r[:2], id=r[2]) for r in WITHOUT_DAY1])
def test_without_induction_day_1_prior_treatment_counts_back_from_the_screening_day(
    exposures: tuple[ExposureFact, ...], expected: CriterionStatus
) -> None:
    result = evaluate(patient(exposures=exposures)).criterion("prior-treatment")

    assert result.status is expected
    if exposures:
        assert "Induction day 1: first day of the window phase not recorded" in result.reason


def test_conflicting_induction_day_1_sources_count_back_from_the_screening_day() -> None:
    record = patient(
        exposures=(window_phase("2025-03-01"), exposure("window-phase", "2025-03-20", ref="other-window"))
    )

    result = evaluate(record).criterion("prior-treatment")

    assert result.status is NOT_MET
    assert "in conflict" in result.reason


# --- exclusion 11: D46 MRD >= 1 %, assessed after enrolment -------------------------------------------------

D46_MRD = [
    # D46 flow MRD   status    overall               why
    ("1 %",          MET,      Overall.INELIGIBLE,   "1 %: excluded"),
    ("0.99 %",       NOT_MET,  Overall.ELIGIBLE,     "0.99 %: not excluded"),
    (None,           UNKNOWN,  Overall.ELIGIBLE,     "not yet known: pending, still eligible"),
]  # fmt: skip


@pytest.mark.parametrize(("d46", "expected", "overall"), [pytest.param(*r[:3], id=r[3]) for r in D46_MRD])
def test_d46_mrd_of_1_percent_or_more(d46: str | None, expected: CriterionStatus, overall: Overall) -> None:
    record = patient(mrd=() if d46 is None else (flow(d46, D46),))

    answer = evaluate(record, "2025-04-20")

    assert answer.criterion("d46-mrd-1pct").status is expected
    assert answer.overall is overall
    assert answer.criterion("d46-mrd-1pct").pending is (d46 is None)


def test_a_pending_d46_result_is_listed_under_pending_not_missing() -> None:
    answer = evaluate(patient())

    assert answer.overall is Overall.ELIGIBLE
    assert answer.missing == ()
    assert answer.pending == (
        "d46-mrd-1pct (assessed after enrolment): no D46 flow MRD yet: "
        "no bone marrow flow result in 2025-04-12..2025-04-22",
    )


def test_an_enrolled_patient_later_found_ineligible_by_d46_is_flagged() -> None:
    record = patient(mrd=(flow("1 %", D46, ref="d46"),), enrolments=(enrolment("2025-04-03"),))

    answer = evaluate(record, "2025-04-20")

    assert answer.overall is Overall.INELIGIBLE
    [flag] = answer.flags
    assert flag.kind is FlagKind.INELIGIBLE_AFTER_ENROLMENT
    assert flag.criterion == "d46-mrd-1pct"
    assert flag.evidence == ("ResearchSubject/enrolment/_history/1", "Observation/d46/_history/1")
    assert flag.message.startswith(
        "enrolled 2025-04-03 (ResearchSubject/enrolment/_history/1); d46-mrd-1pct now met"
    )


@pytest.mark.parametrize(
    ("subject", "flagged"),
    [
        pytest.param(enrolment("2025-04-03", "on-study"), True, id="on study"),
        pytest.param(
            enrolment("2025-04-03", "withdrawn"), True, id="withdrawn: still in the full analysis set"
        ),
        pytest.param(enrolment("2025-04-03", "candidate"), False, id="a candidate is not enrolled"),
        pytest.param(enrolment("2025-04-25", "on-study"), False, id="enrolled after the reference date"),
    ],
)
def test_only_an_enrolled_patient_is_flagged(subject: object, flagged: bool) -> None:
    record = adding(patient(mrd=(flow("1 %", D46),)), subject)
    assert bool(evaluate(record, "2025-04-20").flags) is flagged


def test_an_eligible_enrolled_patient_has_no_flag() -> None:
    record = patient(mrd=(flow("0.5 %", D46),), enrolments=(enrolment("2025-04-03"),))
    assert evaluate(record, "2025-04-20").flags == ()


# --- only data dated on or before as_of count ---------------------------------------------------------------


def test_a_d19_sample_after_the_reference_date_is_ignored_and_the_earlier_one_chosen() -> None:
    # With every sample, the D19 rule (nearest to day 19) picks 0.005 % on day 19; on 18 March only the
    # day-17 sample of 0.5 % exists.
    record = patient(d19=None, mrd=(flow("0.5 %", "2025-03-17", ref="d17"), flow("0.005 %", "2025-03-19")))

    on_d19 = evaluate(record, "2025-03-19").criterion("d19-mrd")
    before = evaluate(record, "2025-03-18").criterion("d19-mrd")

    assert on_d19.status is NOT_MET
    assert before.status is MET
    assert before.evidence[-1] == "Observation/d17/_history/1"


def test_data_after_the_reference_date_are_ignored() -> None:
    record = adding(
        patient(),
        condition("down-syndrome", "2025-04-05"),
        observation("cns-status", "CNS3", "2025-04-05"),
        consent("inactive", "2025-04-05"),
        exposure("chemotherapy", "2025-04-03"),
    )

    assert evaluate(record).overall is Overall.ELIGIBLE
    assert evaluate(record, "2025-04-06").ineligible_by == (
        "consent",
        "down-syndrome-or-congenital-disease",
        "cns-involvement",
    )


def test_a_window_phase_recorded_after_the_reference_date_is_not_yet_induction_day_1() -> None:
    record = patient(exposures=(window_phase("2025-04-10"), exposure("chemotherapy", "2024-06-01")), d19=None)

    result = evaluate(record).criterion("prior-treatment")

    assert result.status is NOT_MET
    assert "not recorded, so counted back from the reference date 2025-04-02" in result.reason


# --- the overall answer -------------------------------------------------------------------------------------


def test_an_eligible_patient() -> None:
    answer = evaluate(patient())

    assert answer.overall is Overall.ELIGIBLE
    assert answer.as_of == AS_OF and answer.protocol_version == PROTOCOL.version
    assert [c.id for c in answer.criteria] == [c.id for c in PROTOCOL.eligibility]
    assert answer.ineligible_by == () and answer.missing == () and answer.flags == ()


def test_an_ineligible_patient_lists_every_criterion_that_excludes() -> None:
    record = adding(patient(risk="low", d19="0.05 %"), condition("down-syndrome"))

    answer = evaluate(record)

    assert answer.overall is Overall.INELIGIBLE
    assert answer.ineligible_by == ("d19-mrd", "down-syndrome-or-congenital-disease")


def test_an_incomplete_patient_lists_what_data_would_decide() -> None:
    record = without(patient(consents=()), "sigm")

    answer = evaluate(record)

    assert answer.overall is Overall.INCOMPLETE
    assert answer.missing == (
        "consent: a Research consent with status active, dated on or before 2025-04-02",
        "sigm-positive: a Surface IgM result (positive / negative) dated on or before 2025-04-02",
    )


def test_an_excluding_criterion_outweighs_unknown_ones() -> None:
    record = without(patient(consents=()), "sigm")
    record = adding(record, condition("cml"))

    answer = evaluate(record)

    assert answer.overall is Overall.INELIGIBLE
    assert answer.ineligible_by == ("cml-evolved",)
    assert answer.missing  # still says what is unknown


def test_every_criterion_has_a_reason_and_its_protocol_text() -> None:
    answer = evaluate(patient())

    for result, criterion in zip(answer.criteria, PROTOCOL.eligibility, strict=True):
        assert result.text == criterion.text and result.kind is criterion.kind
        assert result.reason and "\n" not in result.reason
        assert result.reading == criterion.reading


# --- the criteria are data ----------------------------------------------------------------------------------


def _other_trial_patient(*, birth: str, risk: str, d15: str, steroid_days: int) -> PatientRecord:
    """A patient of the fictional second trial (tests/protocol/fixtures/other_trial.toml), in its own
    concepts: induction from 2025-03-01, a steroid on the `steroid_days` days before it."""
    steroids = (
        (
            exposure(
                "steroid", (date("2025-03-01") - dt.timedelta(days=steroid_days)).isoformat(), "2025-02-28"
            ),
        )
        if steroid_days
        else ()
    )
    return PatientRecord(
        reference="Patient/2/_history/1",
        site="DEMO-BERLIN",
        zone="Europe/Berlin",
        birth_date=ClinicalDate.parse(birth),
        deceased=None,
        conditions=(condition("relapse", "2020-01-01", refuted=True),),
        observations=(observation("risk", risk),),
        exposures=(exposure("induction-start", "2025-03-01", "2025-03-05"), *steroids),
        mrd_results=(flow(d15, "2025-03-15"),),
    )


OTHER_TRIAL_CASES = [
    # criterion              born          risk        D15     steroid days  status    why
    ("age",                  "2024-10-01", "standard", "2 %",   0,           NOT_MET,  "6 months old"),
    ("age",                  "2023-10-01", "standard", "2 %",   0,           MET,      "18 months"),
    ("d15-mrd",              "2020-01-01", "standard", "2 %",   0,           MET,      "needs >= 1 %"),
    ("d15-mrd",              "2020-01-01", "standard", "0.5 %", 0,           NOT_MET,  "0.5 % is not 1 %"),
    ("d15-mrd",              "2020-01-01", "high",     "2 %",   0,           NOT_MET,  "standard risk only"),
    ("steroid-pretreatment", "2020-01-01", "standard", "2 %",   4,           MET,      "more than 3 days"),
    ("steroid-pretreatment", "2020-01-01", "standard", "2 %",   3,           NOT_MET,  "3 days"),
    ("relapse",              "2020-01-01", "standard", "2 %",   0,           NOT_MET,  "a refuted relapse"),
    ("study-consent",        "2020-01-01", "standard", "2 %",   0,           UNKNOWN,  "no consent"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("criterion", "birth", "risk", "d15", "steroid_days", "expected"),
    [pytest.param(*r[:6], id=f"{r[0]}: {r[6]}") for r in OTHER_TRIAL_CASES],
)
def test_a_second_trials_protocol_file_drives_the_same_evaluator(
    criterion: str, birth: str, risk: str, d15: str, steroid_days: int, expected: CriterionStatus
) -> None:
    record = _other_trial_patient(birth=birth, risk=risk, d15=d15, steroid_days=steroid_days)

    answer = evaluate(record, "2025-04-02", protocol=OTHER_TRIAL)

    assert answer.protocol_version == OTHER_TRIAL.version
    assert [c.id for c in answer.criteria] == [c.id for c in OTHER_TRIAL.eligibility]
    assert answer.criterion(criterion).status is expected


def test_the_second_trials_pending_criterion_does_not_hold_the_answer() -> None:
    record = _other_trial_patient(birth="2020-01-01", risk="standard", d15="2 %", steroid_days=0)
    signed = ConsentFact(
        ("study-consent",), "active", ClinicalDate.parse("2025-03-10"), "Consent/9/_history/1"
    )

    answer = evaluate(adding(record, signed), "2025-03-20", protocol=OTHER_TRIAL)

    assert answer.overall is Overall.ELIGIBLE
    assert [p.split(" ")[0] for p in answer.pending] == ["d33-ngs-high"]


# --- every criterion has a met, a not-met and an unknown case -----------------------------------------------

COVERED = (
    {("age", row[2]) for row in AGE}
    | {("all-morphology", row[2]) for row in MORPHOLOGY}
    | {("b-immunophenotype", row[1]) for row in IMMUNOPHENOTYPE}
    | {("d19-mrd", row[2]) for row in D19_MRD}
    | {("consent", row[1]) for row in CONSENT}
    | {(row[0], row[2]) for row in DIAGNOSES}
    | {(criterion, UNKNOWN) for criterion in CONDITION_EXCLUSIONS}
    | {(row[0], row[2]) for row in CODED}
    | {("epilepsy-or-recent-convulsion", row[1]) for row in CONVULSION}
    | {("prior-treatment", row[1]) for row in PRIOR_TREATMENT}
    | {("d46-mrd-1pct", row[1]) for row in D46_MRD}
)


def test_every_criterion_of_the_protocol_has_a_met_a_not_met_and_an_unknown_case() -> None:
    """The tables above assert each row's status; together they cover every criterion three ways."""
    wanted = {(c.id, status) for c in PROTOCOL.eligibility for status in CriterionStatus}

    assert wanted - COVERED == set()
