"""Patients for the eligibility tests, built from plain values (no FHIR): an eligible child by default,
changed one fact at a time by the tests.

The default patient (site in Asia/Shanghai) was born 2018-04-01, has a confirmed ALL diagnosis, bone marrow
morphology ALL, B-ALL immunophenotype, provisional intermediate risk, sIgM negative, CNS1, started the
window phase (induction day 1) on 2025-03-01 and has a D19 bone marrow flow MRD of 0.05 % on 2025-03-19;
research consent is active since 2025-03-25. Screening is on 2025-04-02 (AS_OF), before day 46
(2025-04-15), so the D46 criterion is still pending.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from app.domain.eligibility import EligibilityAnswer, evaluate_eligibility
from app.domain.mrd import Comparator, MrdMeasurement
from app.domain.protocol import Assay, Protocol
from app.domain.record import (
    ConditionFact,
    ConsentFact,
    EnrolmentFact,
    ExposureFact,
    MrdResultFact,
    ObservationFact,
    PatientRecord,
)
from app.domain.timeline import build_timeline
from app.domain.timepoints import ClinicalDate, MrdSample
from app.protocol import load_protocol

REPO = Path(__file__).resolve().parents[2]
PROTOCOL = load_protocol(REPO / "protocols" / "nct06607419.toml")
OTHER_TRIAL = load_protocol(REPO / "tests" / "protocol" / "fixtures" / "other_trial.toml")
ZONE = "Asia/Shanghai"
AS_OF = dt.date(2025, 4, 2)
DAY1 = "2025-03-01"  # induction day 1: the window phase starts
D19 = "2025-03-19"
D46 = "2025-04-15"
BONE_MARROW = "specimen-bone-marrow"

_ids = itertools.count(1)


def date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _ref(kind: str, ref: str | None) -> str:
    return f"{kind}/{ref or next(_ids)}/_history/1"


def _when(text: str | None) -> ClinicalDate | None:
    return None if text is None else ClinicalDate.parse(text)


def condition(
    concept: str,
    onset: str | None = "2025-02-20",
    *,
    confirmed: bool = True,
    refuted: bool = False,
    ref: str | None = None,
) -> ConditionFact:
    return ConditionFact(concept, _when(onset), confirmed, refuted, _ref("Condition", ref))


def observation(
    concept: str, value: str | None, effective: str | None = "2025-02-25", *, ref: str | None = None
) -> ObservationFact:
    return ObservationFact(concept, value, value or "LOCAL-42", _when(effective), _ref("Observation", ref))


def exposure(
    concept: str,
    start: str | None,
    end: str | None = "same day",
    *,
    ongoing: bool = False,
    also: tuple[str, ...] = (),
    ref: str | None = None,
) -> ExposureFact:
    """A medication or procedure; `end` defaults to the start day (one administration)."""
    finish = start if end == "same day" else end
    return ExposureFact(
        concept,
        _when(start),
        None if ongoing else _when(finish),
        ongoing,
        _ref("MedicationAdministration", ref),
        (concept, *also),
    )


def window_phase(start: str = DAY1) -> ExposureFact:
    """The dexamethasone pre-phase: induction day 1 (PROTOCOL.md section 7, concept window-phase)."""
    end = (date(start) + dt.timedelta(days=6)).isoformat()
    return exposure("window-phase", start, end, also=("glucocorticoid",), ref="window-phase")


def consent(status: str = "active", on: str | None = "2025-03-25", *, ref: str | None = None) -> ConsentFact:
    return ConsentFact(("consent-research",), status, _when(on), _ref("Consent", ref))


def enrolment(start: str = "2025-04-03", status: str = "on-study") -> EnrolmentFact:
    return EnrolmentFact("blinatumomab", _when(start), None, status, _ref("ResearchSubject", "enrolment"))


def flow(
    sent: str, collected: str = D19, *, ref: str | None = None, specimen: str = BONE_MARROW
) -> MrdResultFact:
    """'0.05 %', '<0.01 %', 'not detected', 'not detected, sensitivity 0.01 %', '0.5 % (haemodiluted)'."""
    reference = _ref("Observation", ref)
    inadequate = sent.endswith(" (haemodiluted)")
    text = sent.removesuffix(" (haemodiluted)")
    if text.startswith("not detected"):
        sensitivity = text.partition(", sensitivity ")[2]
        measurement = MrdMeasurement(
            assay=Assay.FLOW,
            not_detected=True,
            sensitivity_value=Decimal(sensitivity.split(" ")[0]) if sensitivity else None,
            sensitivity_unit=sensitivity.split(" ")[1] if sensitivity else None,
            value_as_sent=sent,
            reference=reference,
        )
    else:
        number, unit = text.split(" ")
        comparator = next((c for c in ("<=", ">=", "<", ">") if number.startswith(c)), None)
        measurement = MrdMeasurement(
            assay=Assay.FLOW,
            value=Decimal(number.removeprefix(comparator or "")),
            unit=unit,
            comparator=None if comparator is None else Comparator(comparator),
            specimen_inadequate=inadequate,
            value_as_sent=sent,
            reference=reference,
        )
    sample = MrdSample(reference, Assay.FLOW, ClinicalDate.parse(collected), specimen)
    return MrdResultFact(measurement, sample, "final")


def base_observations(risk: str | None = "intermediate") -> tuple[ObservationFact, ...]:
    found = [
        observation("bm-morphology", "ALL", ref="morphology"),
        observation("immunophenotype", "B-ALL", ref="immunophenotype"),
        observation("sigm", "negative", ref="sigm"),
        observation("cns-status", "CNS1", ref="cns"),
    ]
    if risk is not None:
        found.append(observation("provisional-risk", risk, ref="risk"))
    return tuple(found)


def patient(
    *,
    birth: str | None = "2018-04-01",
    risk: str | None = "intermediate",
    d19: str | None = "0.05 %",
    conditions: tuple[ConditionFact, ...] | None = None,
    observations: tuple[ObservationFact, ...] | None = None,
    exposures: tuple[ExposureFact, ...] | None = None,
    consents: tuple[ConsentFact, ...] | None = None,
    mrd: tuple[MrdResultFact, ...] = (),
    enrolments: tuple[EnrolmentFact, ...] = (),
) -> PatientRecord:
    """The eligible default patient; a given argument replaces that part of the record."""
    return PatientRecord(
        reference="Patient/1/_history/1",
        site="HEFEI-APCH",
        zone=ZONE,
        birth_date=_when(birth),
        deceased=None,
        conditions=(condition("all", "2025-02-27", ref="all"),) if conditions is None else conditions,
        observations=base_observations(risk) if observations is None else observations,
        exposures=(window_phase(),) if exposures is None else exposures,
        consents=(consent(ref="consent"),) if consents is None else consents,
        mrd_results=((flow(d19, ref="d19"),) if d19 is not None else ()) + mrd,
        enrolments=enrolments,
    )


def adding(record: PatientRecord, *facts: object) -> PatientRecord:
    """The record with more facts of any kind."""
    kinds = {
        ConditionFact: "conditions",
        ObservationFact: "observations",
        ExposureFact: "exposures",
        ConsentFact: "consents",
        MrdResultFact: "mrd_results",
        EnrolmentFact: "enrolments",
    }
    changes: dict[str, tuple[object, ...]] = {}
    for fact in facts:
        field = kinds[type(fact)]
        changes[field] = (*changes.get(field, getattr(record, field)), fact)
    return replace(record, **changes)  # type: ignore[arg-type]


def without(record: PatientRecord, concept: str) -> PatientRecord:
    """The record without the observations and conditions of one concept."""
    return replace(
        record,
        observations=tuple(o for o in record.observations if o.concept != concept),
        conditions=tuple(c for c in record.conditions if c.concept != concept),
    )


def evaluate(
    record: PatientRecord, as_of: dt.date | str = AS_OF, protocol: Protocol = PROTOCOL
) -> EligibilityAnswer:
    day = date(as_of) if isinstance(as_of, str) else as_of
    timeline = build_timeline(record=record, protocol=protocol)
    return evaluate_eligibility(record=record, timeline=timeline, protocol=protocol, as_of=day)
