"""The protocol file: the real one loads and says what PROTOCOL.md says, a second trial's file drives the
same code differently, and every kind of mistake in a file is reported with its key path."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain.mrd import Classification, ClassificationRule, MrdMeasurement, classify
from app.domain.protocol import (
    ILLUSTRATIVE_SOURCE,
    Assay,
    CriterionKind,
    OffsetUnit,
    Protocol,
    SelectionRule,
)
from app.domain.timepoints import (
    AnchorCandidate,
    AnchorSourceKind,
    ClinicalDate,
    MrdSample,
    local_date,
    place_results,
    resolve_anchors,
    select,
)
from app.protocol import ProtocolError, load_protocol

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "protocols" / "nct06607419.toml"
OTHER = Path(__file__).parent / "fixtures" / "other_trial.toml"
CONCEPT = "urn:mrdhub:concept"
ICD10, SNOMED, ATC = "http://hl7.org/fhir/sid/icd-10", "http://snomed.info/sct", "http://www.whocc.no/atc"


@pytest.fixture(scope="module")
def main() -> Protocol:
    return load_protocol(MAIN)


@pytest.fixture(scope="module")
def other() -> Protocol:
    return load_protocol(OTHER)


# --- the real protocol -------------------------------------------------------------------------------------


def test_the_version_is_the_study_and_the_first_12_hex_of_the_files_sha256(main: Protocol) -> None:
    digest = hashlib.sha256(MAIN.read_bytes()).hexdigest()[:12]

    assert main.version == f"nct06607419@{digest}"
    assert re.fullmatch(r"nct06607419@[0-9a-f]{12}", main.version)
    assert load_protocol(MAIN).version == main.version


def test_any_change_to_the_file_changes_the_version(main: Protocol, tmp_path: Path) -> None:
    edited = tmp_path / "edited.toml"
    edited.write_bytes(MAIN.read_bytes() + b"\n# a comment added by the trial office\n")

    assert load_protocol(edited).version != main.version


def test_the_study_and_its_four_sites(main: Protocol) -> None:
    assert (main.study.identifier_system, main.study.identifier) == (
        "https://clinicaltrials.gov",
        "NCT06607419",
    )
    assert main.study.target_enrolment == 90
    assert main.study.site_identifier_system == "urn:mrdhub:site"
    assert {code: (s.city, s.zone) for code, s in main.sites.items()} == {
        "HEFEI-APCH": ("Hefei", "Asia/Shanghai"),
        "FUZHOU-FCH": ("Fuzhou", "Asia/Shanghai"),
        "SHANGHAI-SCMC": ("Shanghai", "Asia/Shanghai"),
        "NINGBO-NWCH": ("Ningbo", "Asia/Shanghai"),
    }


def test_the_assay_thresholds_and_cell_counts_are_those_of_section_3(main: Protocol) -> None:
    flow, ngs = main.assays[Assay.FLOW], main.assays[Assay.NGS]

    assert (flow.concept, flow.threshold_fraction, flow.min_cells) == ("mrd-flow", Decimal("0.0001"), 500_000)
    assert (ngs.concept, ngs.threshold_fraction, ngs.min_cells) == ("mrd-ngs", Decimal("0.000001"), 1_000_000)
    assert set(flow.unit_factors) == {"%", "1", "/10*6", "{cells}/10*6{cells}", "10*-6"}


def test_the_timepoints_are_the_table_of_section_2(main: Protocol) -> None:
    table = [
        (t.name, t.anchor, t.unit, t.target, t.window_start, t.window_end, t.assays, t.selection)
        for t in main.timepoints
    ]
    trial, from_anchor, nearest = OffsetUnit.TRIAL_DAY, OffsetUnit.DAYS_FROM_ANCHOR, SelectionRule.NEAREST
    flow, ngs = Assay.FLOW, Assay.NGS

    assert table == [
        ("D19", "induction-day1", trial, 19, 17, 22, (flow,), nearest),
        ("D46", "induction-day1", trial, 46, 43, 53, (flow, ngs), nearest),
        ("PRE_BLINA", "blinatumomab-start", from_anchor, -1, -14, 0, (flow, ngs), nearest),
        ("POST_BLINA", "blinatumomab-end", from_anchor, 0, 0, 7, (flow, ngs), nearest),
    ]
    assert main.timepoint("D46").optional_assays == frozenset({ngs})
    assert main.results.timepoint_specimens == frozenset({"specimen-bone-marrow"})


# Every trial concept of PROTOCOL.md section 7 (and blast-percent of section 3).
SECTION_7_CONCEPTS = [
    "mrd-flow",
    "mrd-ngs",
    "blast-percent",
    "specimen-bone-marrow",
    "specimen-peripheral-blood",
    "provisional-risk",
    "bm-morphology",
    "immunophenotype",
    "sigm",
    "cns-status",
    "all",
    "cml",
    "down-syndrome",
    "congenital-disease-with-organ-dysfunction",
    "secondary-leukemia",
    "congenital-immunodeficiency",
    "metabolic-disease",
    "congenital-heart-disease",
    "cardiac-insufficiency",
    "epilepsy",
    "convulsion",
    "relapse",
    "induction-failure",
    "second-malignancy",
    "consent-research",
    "window-phase",
    "blinatumomab",
    "glucocorticoid",
    "abl-tki",
    "chemotherapy",
    "radiotherapy",
    "emergency-airway-radiotherapy",
    "hd-methotrexate",
]


@pytest.mark.parametrize("concept", SECTION_7_CONCEPTS)
def test_every_trial_concept_code_maps_to_itself(main: Protocol, concept: str) -> None:
    assert main.codes.concept_for(CONCEPT, concept) == concept


@pytest.mark.parametrize(
    ("system", "code", "concept"),
    [
        (SNOMED, "119359002", "specimen-bone-marrow"),
        (SNOMED, "396997002", "specimen-bone-marrow"),
        (SNOMED, "122551003", "specimen-peripheral-blood"),
        (SNOMED, "277571004", "all"),
        (ICD10, "C91.0", "all"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "C91.02", "all"),
        (ICD10, "C92.1", "cml"),
        (ICD10, "Q90.9", "down-syndrome"),  # a subcode of Q90
        (ICD10, "D81.1", "congenital-immunodeficiency"),  # inside D80-D84
        (ICD10, "D85", None),  # just outside it
        (ICD10, "E88.1", "metabolic-disease"),
        (ICD10, "Q21.0", "congenital-heart-disease"),
        (ICD10, "I50.9", "cardiac-insufficiency"),
        (ICD10, "G40.9", "epilepsy"),
        (ICD10, "R56.0", "convulsion"),
        (ATC, "L01FX07", "blinatumomab"),
        (ATC, "H02AB02", "glucocorticoid"),  # dexamethasone
        (ATC, "L01EA01", "abl-tki"),  # imatinib: L01EA is more specific than L01
        (ATC, "L01BA01", "chemotherapy"),  # methotrexate
        (ATC, "L02BA01", None),
        ("urn:oid:demo-lis:hefei", "FCM-MRD", "mrd-flow"),
        ("urn:oid:demo-lis:hefei", "NGS-MRD", "mrd-ngs"),
        ("urn:oid:demo-lis:hefei", "UNKNOWN", None),
    ],
)
def test_standard_and_local_codes_map_to_trial_concepts(
    main: Protocol, system: str, code: str, concept: str | None
) -> None:
    assert main.codes.concept_for(system, code) == concept


def test_the_demo_lis_codes_are_marked_as_demo(main: Protocol) -> None:
    demo = [c for c in main.codes.codes if c.demo]

    assert {(c.system, c.code) for c in demo} == {
        ("urn:oid:demo-lis:hefei", "FCM-MRD"),
        ("urn:oid:demo-lis:hefei", "NGS-MRD"),
    }


def test_coded_values_map_within_their_concept(main: Protocol) -> None:
    assert (
        main.codes.value_for(concept="provisional-risk", system=CONCEPT, code="intermediate")
        == "intermediate"
    )
    assert main.codes.value_for(concept="cns-status", system=CONCEPT, code="CNS3") == "CNS3"
    assert main.codes.value_for(concept="sigm", system=CONCEPT, code="low") is None


def test_the_historical_control_is_labelled_illustrative(main: Protocol) -> None:
    for assay in (Assay.FLOW, Assay.NGS):
        control = main.p0_for(assay=assay, stratum="low")
        assert control is not None and control.stratum is None  # no stratum rate: the overall one
        assert control.source == ILLUSTRATIVE_SOURCE and control.is_illustrative


def test_the_eligibility_criteria_of_section_4(main: Protocol) -> None:
    by_id = {c.id: c for c in main.eligibility}

    assert [c.id for c in main.eligibility if c.kind is CriterionKind.INCLUSION] == [
        "age",
        "all-morphology",
        "b-immunophenotype",
        "d19-mrd",
        "consent",
    ]
    assert len([c for c in main.eligibility if c.kind is CriterionKind.EXCLUSION]) == 11
    d19 = {(m.stratum, m.at_least_fraction) for m in by_id["d19-mrd"].mrd}
    assert d19 == {("low", Decimal("0.001")), ("intermediate", Decimal("0.0001"))}
    d46 = by_id["d46-mrd-1pct"]
    assert d46.assessed_after_enrolment and d46.mrd[0].at_least_fraction == Decimal("0.01")
    assert d46.reading and by_id["prior-treatment"].reading
    assert "before induction day 1" in by_id["prior-treatment"].reading
    assert [lb.concept for lb in by_id["prior-treatment"].lookbacks] == [
        "glucocorticoid",
        "abl-tki",
        "chemotherapy",
        "radiotherapy",
    ]
    assert [c.id for c in main.eligibility if c.assessed_after_enrolment] == ["d46-mrd-1pct"]


def test_the_secondary_endpoint_windows(main: Protocol) -> None:
    assert main.efs.events == ("induction-failure", "relapse", "second-malignancy", "death")
    assert main.efs.origin == "enrolment"
    ae = main.adverse_events
    assert (ae.start.anchor, ae.start.offset, ae.end.anchor) == ("induction-day1", 19, "hd-mtx-2")
    assert ae.special_interest == ("cytokine release syndrome", "neurotoxicity")
    assert main.costs is not None and (main.costs.length.months, main.costs.currency) == (6, "CNY")
    assert main.courses["blinatumomab"].required_days == 14
    assert set(main.analysis_sets) == {"full", "per-protocol"}


# --- a second trial through the same code -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assay", "value", "unit", "in_main", "in_other"),
    [
        (Assay.NGS, "0.0005", "%", Classification.POSITIVE, Classification.NEGATIVE),  # 5e-6: 1e-6 vs 1e-5
        (Assay.NGS, "0.001", "%", Classification.POSITIVE, Classification.POSITIVE),  # 1e-5: at both cut-offs
        (Assay.FLOW, "0.05", "%", Classification.POSITIVE, Classification.NEGATIVE),  # 5e-4: 1e-4 vs 1e-3
        (Assay.FLOW, "0.1", "%", Classification.POSITIVE, Classification.POSITIVE),
    ],
)
def test_the_same_result_is_classified_by_each_trials_own_cut_off(
    main: Protocol, other: Protocol, assay: Assay, value: str, unit: str, in_main: str, in_other: str
) -> None:
    sent = MrdMeasurement(assay=assay, value=Decimal(value), unit=unit, cells_analysed=5_000_000)

    assert classify(measurement=sent, rule=main.assays[assay]).classification == in_main
    assert classify(measurement=sent, rule=other.assays[assay]).classification == in_other


def test_a_unit_one_trial_accepts_can_be_unconvertible_in_another(main: Protocol, other: Protocol) -> None:
    sent = MrdMeasurement(assay=Assay.NGS, value=Decimal(5), unit="/10*6", cells_analysed=5_000_000)

    assert classify(measurement=sent, rule=main.assays[Assay.NGS]).classification is Classification.POSITIVE
    assert (
        classify(measurement=sent, rule=other.assays[Assay.NGS]).rule is ClassificationRule.UNCONVERTIBLE_UNIT
    )


def test_the_same_sample_lands_on_each_trials_own_timepoints(main: Protocol, other: Protocol) -> None:
    day15 = MrdSample("Observation/1", Assay.FLOW, ClinicalDate.parse("2025-03-15"), "specimen-bone-marrow")
    candidates = [AnchorCandidate("induction-day1", dt.date(2025, 3, 1), AnchorSourceKind.DATA, "CarePlan/1")]
    known = resolve_anchors(candidates=candidates)

    def placed(protocol: Protocol) -> tuple[tuple[str, ...], str | None, int | None]:
        [p] = place_results(
            results=[day15],
            anchors=known,
            timepoints=protocol.timepoints,
            zone=next(iter(protocol.sites.values())).zone,
            timepoint_specimens=protocol.results.timepoint_specimens,
        )
        return p.timepoints, p.nearest_timepoint, p.days_outside

    assert placed(main) == ((), "D19", 2)
    assert placed(other) == (("D15",), None, None)


def test_each_trials_selection_rules_apply(other: Protocol) -> None:
    samples = [
        MrdSample(f"Observation/{d}", Assay.FLOW, ClinicalDate.parse(d), "specimen-bone-marrow")
        for d in ("2025-03-16", "2025-03-14", "2025-03-15")
    ]
    known = resolve_anchors(
        candidates=[
            AnchorCandidate("induction-day1", dt.date(2025, 3, 1), AnchorSourceKind.DATA, "CarePlan/1")
        ]
    )
    placements = place_results(
        results=samples,
        anchors=known,
        timepoints=other.timepoints,
        zone="Europe/Berlin",
        timepoint_specimens=other.results.timepoint_specimens,
    )

    d15 = select(placements=placements, anchors=known, timepoints=other.timepoints)[0]

    assert (d15.timepoint, d15.selection) == ("D15", SelectionRule.FIRST)
    assert d15.selected is not None and d15.selected.sample.reference == "Observation/2025-03-14"


def test_each_site_counts_days_in_its_own_zone(other: Protocol) -> None:
    instant = dt.datetime.fromisoformat("2025-03-15T02:00:00+00:00")

    assert local_date(instant=instant, zone=other.sites["DEMO-SAOPAULO"].zone) == dt.date(2025, 3, 14)
    assert local_date(instant=instant, zone=other.sites["DEMO-BERLIN"].zone) == dt.date(2025, 3, 15)


def test_a_second_trial_without_per_million_units_or_courses_loads(other: Protocol) -> None:
    assert other.version.startswith("demo-mrd-b@")
    assert other.courses == {} and other.costs is None
    assert [t.name for t in other.timepoints] == ["D15", "D33", "D78"]


# --- bad files ----------------------------------------------------------------------------------------------

BAD_FILES = [
    # (what is wrong, text replaced, replacement, expected "path: problem")
    (
        "an unknown key",
        'label = "Day 19 of induction"',
        'label = "Day 19 of induction"\ncolour = "blue"',
        "timepoints.D19.colour: unknown key",
    ),
    (
        "a window that ends before it starts",
        "window = { from = 17, to = 22 }",
        "window = { from = 22, to = 17 }",
        "timepoints.D19.window: start must be <= end",
    ),
    (
        "a target outside its window",
        "target = 19",
        "target = 25",
        "timepoints.D19.target: 25 is outside the window",
    ),
    (
        "a threshold of zero",
        'threshold_fraction = "0.0001"',
        'threshold_fraction = "0"',
        "assays.flow.threshold_fraction: Input should be greater than 0",
    ),
    (
        "a threshold written as a percentage",
        'threshold_fraction = "0.0001"',
        "threshold_fraction = 1.5",
        "assays.flow.threshold_fraction: Input should be less than 1",
    ),
    (
        "a code mapped to two concepts",
        '{ system = "urn:oid:demo-lis:hefei", code = "NGS-MRD",',
        '{ system = "urn:oid:demo-lis:hefei", code = "FCM-MRD",',
        "concepts.mrd-ngs.codes[0]: urn:oid:demo-lis:hefei|FCM-MRD is already mapped to concept 'mrd-flow'",
    ),
    (
        "overlapping code ranges of two concepts",
        'range = ["E70", "E88"]',
        'range = ["D84", "E88"]',
        "concepts.metabolic-disease.codes[0]: range D84..E88 overlaps D80..D84 of 'congenital-immuno",
    ),
    (
        "a timepoint on an unknown anchor",
        'anchor = "blinatumomab-end"',
        'anchor = "blinatumomab-stop"',
        "timepoints.POST_BLINA.anchor: unknown anchor 'blinatumomab-stop'",
    ),
    (
        "a timepoint with an unknown assay",
        'assays = ["flow"]',
        'assays = ["pcr"]',
        "timepoints.D19.assays[0]: Input should be 'flow' or 'ngs'",
    ),
    (
        "an unknown time zone",
        'city = "Ningbo"\nzone = "Asia/Shanghai"',
        'city = "Ningbo"\nzone = "Asia/Ningbo"',
        "sites.NINGBO-NWCH.zone: unknown IANA time zone 'Asia/Ningbo'",
    ),
    (
        "a p0 above 1",
        'p0 = "0.3"',
        'p0 = "30"',
        "historical_control[1].p0: Input should be less than or equal to 1",
    ),
    (
        "a p0 without its source",
        'p0 = "0.5"\nsource = "illustrative, not a published rate"',
        'p0 = "0.5"',
        "historical_control[0].source: required key is missing",
    ),
    (
        "a criterion on an unknown timepoint",
        'timepoint = "D46", assay = "flow", at_least_fraction = "0.01"',
        'timepoint = "D64", assay = "flow", at_least_fraction = "0.01"',
        "eligibility[15].mrd[0].timepoint: unknown timepoint 'D64'",
    ),
    (
        "a criterion on an unknown concept",
        'conditions = { any_of = ["cml"] }',
        'conditions = { any_of = ["chronic-myeloid"] }',
        "eligibility[6].conditions.any_of[0]: unknown concept 'chronic-myeloid'",
    ),
    (
        "an observation value the concept does not have",
        'values = ["CNS3"]',
        'values = ["CNS4"]',
        "eligibility[9].observations[0].values[0]: 'CNS4' is not a value of 'cns-status'",
    ),
    (
        "a control timepoint the file does not define",
        'control_timepoint = "D46"',
        'control_timepoint = "D64"',
        "primary.control_timepoint: unknown timepoint 'D64'",
    ),
    (
        "a baseline timepoint that does not measure a primary assay",
        'baseline_timepoint = "PRE_BLINA"',
        'baseline_timepoint = "D19"',
        "primary.baseline_timepoint: D19 does not measure primary assay 'ngs'",
    ),
    ("text that is not TOML", "[study]", "[study", "not valid TOML"),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [pytest.param(old, new, expected, id=what) for what, old, new, expected in BAD_FILES],
)
def test_a_bad_protocol_file_is_refused_naming_the_key(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = MAIN.read_text(encoding="utf-8")
    assert old in text, "the test's anchor text is no longer in the protocol file"
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")

    with pytest.raises(ProtocolError) as caught:
        load_protocol(bad)

    assert expected in str(caught.value)
    assert str(bad) in str(caught.value)


def test_a_timepoint_using_an_assay_the_trial_does_not_define_is_refused(tmp_path: Path) -> None:
    text = OTHER.read_text(encoding="utf-8")
    ngs_table = text[text.index("[assays.ngs]") : text.index("[anchors.induction-day1]")]
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(ngs_table, ""), encoding="utf-8")

    with pytest.raises(ProtocolError) as caught:
        load_protocol(bad)

    paths = {p.path for p in caught.value.problems}
    assert {"timepoints.D33.assays[1]", "timepoints.D78.assays[0]", "primary.assays[0]"} <= paths


def test_the_timepoint_roles_of_the_endpoints_are_protocol_data(main: Protocol, other: Protocol) -> None:
    assert (main.primary.timepoint, main.primary.control, main.primary.baseline_timepoint) == (
        "POST_BLINA",
        "D46",
        "PRE_BLINA",
    )
    # A trial without a patient-level control or a response analysis names neither.
    assert (other.primary.control, other.primary.baseline_timepoint) == ("D33", None)


def test_a_missing_protocol_file_is_a_protocol_error(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot be read"):
        load_protocol(tmp_path / "absent.toml")
