"""One patient's clinical facts, already mapped to trial concepts: the seam between FHIR and the trial logic.

The FHIR layer (`app/fhir/extract.py`) reads stored resources into these plain values; timelines,
eligibility and the endpoint analyses read only these. Every fact keeps the versioned reference of the
resource it came from ("Observation/7/_history/2"), which is the evidence shown to users.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from app.domain.mrd import MrdMeasurement
from app.domain.timepoints import AnchorCandidate, ClinicalDate, MrdSample


@dataclass(frozen=True, slots=True)
class ConditionFact:
    concept: str  # e.g. "down-syndrome", "relapse"
    onset: ClinicalDate | None  # onset, or recorded date when no onset was given
    confirmed: bool  # verificationStatus confirmed (or absent: a diagnosis on the record is taken as stated)
    refuted: bool  # verificationStatus refuted or entered-in-error: the condition does not hold
    reference: str


@dataclass(frozen=True, slots=True)
class ObservationFact:
    """A coded, non-MRD observation: provisional risk, morphology, immunophenotype, sIgM, CNS status."""

    concept: str
    value: str | None  # the mapped value (e.g. "low", "B-ALL", "CNS3"); None if the code is not mapped
    value_as_sent: str  # the code or text as sent, for the evidence
    effective: ClinicalDate | None
    reference: str


@dataclass(frozen=True, slots=True)
class ExposureFact:
    """A medication or procedure with its period: window phase, blinatumomab, steroids, TKIs, chemo, RT."""

    concept: str
    start: ClinicalDate | None
    end: ClinicalDate | None
    ongoing: bool  # status in-progress: no end yet
    reference: str
    concepts: tuple[str, ...] = ()  # every concept its codes map to (a code can be both chemo and HD-MTX)


@dataclass(frozen=True, slots=True)
class ConsentFact:
    concepts: tuple[str, ...]  # concepts of its category / scope codes
    status: str
    date: ClinicalDate | None
    reference: str


@dataclass(frozen=True, slots=True)
class MrdResultFact:
    """An MRD Observation in a usable status, with what classification and placement need."""

    measurement: MrdMeasurement
    sample: MrdSample
    status: str


@dataclass(frozen=True, slots=True)
class EnrolmentFact:
    """A ResearchSubject of this study."""

    arm: str | None  # "blinatumomab" or "historical-control"
    start: ClinicalDate | None
    end: ClinicalDate | None
    status: str
    reference: str


@dataclass(frozen=True, slots=True)
class AdverseEventFact:
    term: str  # CTCAE term (event.text or coding display/code)
    grade: int | None  # CTCAE v5 grade 1-5 from the protocol's extension
    date: ClinicalDate | None
    reference: str


@dataclass(frozen=True, slots=True)
class CostFact:
    amount: Decimal | None
    currency: str | None
    date: ClinicalDate | None
    reference: str


@dataclass(frozen=True, slots=True)
class PatientRecord:
    reference: str  # "Patient/12/_history/3"
    site: str | None  # site code (urn:mrdhub:site) of the managing organisation
    zone: str  # the site's IANA zone: trial days are local calendar days there (PROTOCOL.md section 2)
    birth_date: ClinicalDate | None
    deceased: ClinicalDate | None
    conditions: tuple[ConditionFact, ...] = ()
    observations: tuple[ObservationFact, ...] = ()
    exposures: tuple[ExposureFact, ...] = ()
    consents: tuple[ConsentFact, ...] = ()
    mrd_results: tuple[MrdResultFact, ...] = ()
    enrolments: tuple[EnrolmentFact, ...] = ()
    adverse_events: tuple[AdverseEventFact, ...] = ()
    costs: tuple[CostFact, ...] = ()
    manual_anchors: tuple[AnchorCandidate, ...] = ()  # set by the trial office, audited
    # MRD observations that were stored but not usable (preliminary, withdrawn): shown, never used.
    unused_mrd: tuple[str, ...] = field(default=())
