"""Who is analysed: arms, strata, sites, withdrawal, the cut-off on clinical dates, analysis sets."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from app.domain.endpoints import build_cohort, last_contact, membership, record_as_of
from app.domain.endpoints.errors import AnalysisSetNeedsAssay, EndpointError
from app.domain.record import EnrolmentFact, ObservationFact

from .trial_cohort import AS_OF, C1, FLOW, PROTOCOL, S1, S5, S6, S8, mrd, on, ref, timelines, trial_day


def test_enrolled_patients_with_arm_stratum_and_site() -> None:
    found = build_cohort(timelines=timelines(), protocol=PROTOCOL, as_of=AS_OF)
    assert [(p.reference.split("/")[1], p.arm, p.stratum, p.site) for p in found.patients][:2] == [
        ("C1", "historical-control", "low", "HEFEI-APCH"),
        ("C2", "historical-control", "intermediate", "FUZHOU-FCH"),
    ]
    assert len(found.arm("blinatumomab")) == 8
    assert len(found.arm("historical-control")) == 4
    assert ref("N1") not in [p.reference for p in found.patients]  # never enrolled


@pytest.mark.parametrize(
    ("status", "enrolled"),
    [("on-study", True), ("off-study", True), ("follow-up", True), ("withdrawn", True),
     ("candidate", False), ("screening", False), ("ineligible", False), ("pending-on-study", False)],
)  # fmt: skip
def test_which_research_subject_statuses_mean_enrolled(status: str, enrolled: bool) -> None:
    record = replace(S1, enrolments=(replace(S1.enrolments[0], status=status),))
    found = build_cohort(timelines=timelines(record), protocol=PROTOCOL, as_of=AS_OF)
    assert bool(found.patients) is enrolled


def test_two_arms_for_one_patient_is_an_exclusion_not_a_guess() -> None:
    second = EnrolmentFact(
        "historical-control", on("2025-01-20"), None, "on-study", "ResearchSubject/x/_history/1"
    )
    record = replace(S1, enrolments=(*S1.enrolments, second))
    found = build_cohort(timelines=timelines(record), protocol=PROTOCOL, as_of=AS_OF)
    assert found.patients == ()
    assert found.excluded[0].reason.startswith("enrolled in more than one arm: blinatumomab (")


def test_conflicting_strata_give_unknown_and_a_flag() -> None:
    other = ObservationFact(
        "provisional-risk", "intermediate", "intermediate", on("2025-01-19"), "Observation/r2/_history/1"
    )
    record = replace(S1, observations=(*S1.observations, other))
    (patient,) = build_cohort(timelines=timelines(record), protocol=PROTOCOL, as_of=AS_OF).patients
    assert patient.stratum == "unknown"
    assert patient.flags[0].startswith("conflicting provisional-risk values: low (")


def test_a_withdrawn_patient_stays_in_the_full_set_if_they_received_blinatumomab() -> None:
    found = build_cohort(timelines=timelines(S5, S6), protocol=PROTOCOL, as_of=AS_OF)
    s5, s6 = found.patients
    full = PROTOCOL.analysis_sets["full"]
    assert (s5.withdrawn, s5.withdrawal_date) == (True, dt.date(2025, 1, 27))
    assert membership(patient=s5, analysis_set=full, assay=FLOW, protocol=PROTOCOL).included
    out = membership(patient=s6, analysis_set=full, assay=FLOW, protocol=PROTOCOL)
    assert (out.included, out.reason) == (False, "did not receive blinatumomab (withdrew before it)")


def test_controls_need_no_course_and_are_judged_at_d46() -> None:
    (c1,) = build_cohort(timelines=timelines(C1), protocol=PROTOCOL, as_of=AS_OF).patients
    per_protocol = PROTOCOL.analysis_sets["per-protocol"]
    found = membership(patient=c1, analysis_set=per_protocol, assay=FLOW, protocol=PROTOCOL)
    assert found.included
    assert found.result is not None
    assert (found.result.timepoint, found.result.observation) == ("D46", "Observation/C1-d46-flow/_history/1")
    with pytest.raises(AnalysisSetNeedsAssay):
        membership(patient=c1, analysis_set=per_protocol, assay=None, protocol=PROTOCOL)


def test_the_cut_off_drops_later_facts_and_stops_running_courses() -> None:
    cut = record_as_of(S8, as_of=dt.date(2026, 6, 19))
    assert [r.sample.reference for r in cut.mrd_results] == ["Observation/S8-pre-flow/_history/1"]  # 06-14
    blina = next(e for e in cut.exposures if e.concept == "blinatumomab")
    assert (blina.end, blina.ongoing) == (None, True)  # 2026-06-15..2026-06-28: still infusing
    assert cut.costs == S8.costs  # 2026-06-01
    assert cut.adverse_events == ()  # 2026-06-20
    assert cut.enrolments == S8.enrolments  # 2026-06-13
    assert record_as_of(S8, as_of=dt.date(2026, 6, 20)).adverse_events == S8.adverse_events  # on the day
    assert record_as_of(S1, as_of=AS_OF) == S1


def test_a_partial_date_is_after_the_cut_off_only_if_it_starts_after_it() -> None:
    same_month = replace(S1, deceased=on("2026-06"))
    next_month = replace(S1, deceased=on("2026-07"))
    assert record_as_of(same_month, as_of=AS_OF).deceased == on("2026-06")
    assert record_as_of(next_month, as_of=AS_OF).deceased is None


def test_last_contact_is_the_latest_precise_clinical_date() -> None:
    assert last_contact(S1) == (dt.date(2026, 3, 1), "ChargeItem/S1-visit/_history/1")
    assert last_contact(S5) == (dt.date(2025, 1, 27), "ResearchSubject/S5/_history/1")


def test_a_patient_given_twice_is_an_error() -> None:
    with pytest.raises(EndpointError, match="given twice"):
        build_cohort(timelines=[*timelines(S1), *timelines(S1)], protocol=PROTOCOL, as_of=AS_OF)


def test_a_d46_result_of_1_percent_after_enrolment_flags_the_patient_who_stays_in_the_full_set() -> None:
    record = replace(S1, mrd_results=(*S1.mrd_results, mrd("S1-d46-flow", FLOW, trial_day(46), "1.5 %")))
    (patient,) = build_cohort(timelines=timelines(record), protocol=PROTOCOL, as_of=AS_OF).patients
    assert patient.flags == (
        "d46-mrd-1pct: D46 flow 1.5 % >= 1 % after enrolment (Observation/S1-d46-flow/_history/1);"
        " data query, kept in the analysis sets",
    )
    full = PROTOCOL.analysis_sets["full"]
    assert membership(patient=patient, analysis_set=full, assay=FLOW, protocol=PROTOCOL).included
