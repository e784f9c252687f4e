"""A small cohort whose every endpoint number can be checked by hand (issue 6, "Tests that must exist").

Cut-off 2026-06-30, all sites in Asia/Shanghai. Unless noted, induction day 1 (window phase) is 2025-01-01,
so day N = 2025-01-01 + (N - 1): enrolment day 20 (2025-01-20), PRE_BLINA samples day 21, blinatumomab days
22..35 (2025-01-22..2025-02-04), POST_BLINA samples day 36 (2025-02-05), D46 samples 2025-02-15, HD-MTX
courses on day 60 (2025-03-01) and day 74 (2025-03-15). Percentages are as sent ("0.005 %" = 5e-5).

study (arm blinatumomab)                        POST flow         POST NGS           events / notes
  S1 HEFEI    low           PRE 0.5 % / 0.4 %    0.005 %  neg     0.00005 % neg      AEs in and out of window
  S2 FUZHOU   intermediate  PRE 1 %              0.02 %   pos     0.001 %   pos      relapse 2025-07-19
  S3 SHANGHAI low           PRE 0.3 %            n.d. <0.001 % neg  (none)           -
  S4 HEFEI    intermediate  PRE 0.2 % / 0.1 %    <0.05 %  n.e.    0.00001 % neg      -
  S5 FUZHOU   low           PRE 0.8 %            (none)           (none)             withdrew day 27, 5 days
  S6 SHANGHAI intermediate  -                    -                -                  withdrew before blina
  S7 HEFEI    intermediate  -                    0.008 %  neg     0.0002 %  pos      died 2025-10-17
  S8 SHANGHAI low           day 1 2026-05-25     collected 2026-07-02 (after the cut-off)
control (arm historical-control)   D46 flow      D46 NGS
  C1 HEFEI    low                  0.005 % neg   0.0005 %  pos                       -
  C2 FUZHOU   intermediate         0.05 %  pos   0.00005 % neg                       relapse 2025-04-30
  C3 SHANGHAI intermediate         0.02 %  pos   (none)                              died 2025-07-19
  C4 HEFEI    low                  0.009 % neg   (none)                              induction failure 03-01
not enrolled: N1 (ineligible), N4 (eligible, not enrolled).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from decimal import Decimal
from functools import cache
from pathlib import Path

from app.domain.mrd import Comparator, MrdMeasurement
from app.domain.protocol import Assay, Protocol
from app.domain.record import (
    AdverseEventFact,
    ConditionFact,
    CostFact,
    EnrolmentFact,
    ExposureFact,
    MrdResultFact,
    ObservationFact,
    PatientRecord,
)
from app.domain.timeline import PatientTimeline, build_timeline
from app.domain.timepoints import ClinicalDate, MrdSample
from app.protocol import load_protocol

PROTOCOL: Protocol = load_protocol(Path(__file__).resolve().parents[3] / "protocols" / "nct06607419.toml")
ZONE = "Asia/Shanghai"
AS_OF = dt.date(2026, 6, 30)
DAY1 = dt.date(2025, 1, 1)
FLOW, NGS = Assay.FLOW, Assay.NGS
HEFEI, FUZHOU, SHANGHAI = "HEFEI-APCH", "FUZHOU-FCH", "SHANGHAI-SCMC"
STUDY, CONTROL = "blinatumomab", "historical-control"


def on(text: str) -> ClinicalDate:
    return ClinicalDate.parse(text)


def trial_day(n: int, day1: dt.date = DAY1) -> ClinicalDate:
    return ClinicalDate.of_day(day1 + dt.timedelta(days=n - 1))


def mrd(
    name: str, assay: Assay, collected: ClinicalDate, sent: str, *, cells: int | None = 2_000_000
) -> MrdResultFact:
    """sent: "0.005 %", "<0.05 %", ">1 %" or "nd <0.001 %" (not detected, sensitivity 0.001 %)."""
    reference = f"Observation/{name}/_history/1"
    number, unit = sent.removeprefix("nd ").split(" ")
    measurement = MrdMeasurement(assay=assay, cells_analysed=cells, value_as_sent=sent, reference=reference)
    if sent.startswith("nd "):
        sensitivity = Decimal(number.removeprefix("<"))
        measurement = replace(
            measurement, not_detected=True, sensitivity_value=sensitivity, sensitivity_unit=unit
        )
    elif number[0] in "<>":
        comparator = Comparator.LT if number[0] == "<" else Comparator.GT
        measurement = replace(measurement, value=Decimal(number[1:]), unit=unit, comparator=comparator)
    else:
        measurement = replace(measurement, value=Decimal(number), unit=unit)
    return MrdResultFact(measurement, MrdSample(reference, assay, collected, "specimen-bone-marrow"), "final")


def exposure(name: str, concept: str, start: ClinicalDate, end: ClinicalDate) -> ExposureFact:
    return ExposureFact(concept, start, end, False, f"MedicationAdministration/{name}/_history/1", (concept,))


def cost(name: str, day: str, amount: str, currency: str | None = "CNY") -> CostFact:
    return CostFact(Decimal(amount), currency, on(day), f"ChargeItem/{name}/_history/1")


def adverse(name: str, term: str, grade: int | None, day: str) -> AdverseEventFact:
    return AdverseEventFact(term, grade, on(day), f"AdverseEvent/{name}/_history/1")


def condition(name: str, concept: str, day: str) -> ConditionFact:
    return ConditionFact(concept, on(day), True, False, f"Condition/{name}/_history/1")


def patient(
    name: str,
    *,
    arm: str | None,
    site: str,
    stratum: str,
    day1: dt.date = DAY1,
    blinatumomab_days: int | None = 14,
    status: str = "on-study",
    enrolment_end: str | None = None,
    hd_mtx: bool = True,
    mrd_results: tuple[MrdResultFact, ...] = (),
    conditions: tuple[ConditionFact, ...] = (),
    deceased: str | None = None,
    adverse_events: tuple[AdverseEventFact, ...] = (),
    costs: tuple[CostFact, ...] = (),
) -> PatientRecord:
    exposures = [exposure(f"{name}-window", "window-phase", trial_day(1, day1), trial_day(7, day1))]
    if blinatumomab_days:
        last = trial_day(22 + blinatumomab_days - 1, day1)
        exposures.append(exposure(f"{name}-blina", "blinatumomab", trial_day(22, day1), last))
    if hd_mtx:
        exposures.append(
            exposure(f"{name}-mtx1", "hd-methotrexate", trial_day(60, day1), trial_day(60, day1))
        )
        exposures.append(
            exposure(f"{name}-mtx2", "hd-methotrexate", trial_day(74, day1), trial_day(74, day1))
        )
    enrolments: tuple[EnrolmentFact, ...] = ()
    if arm is not None:
        end = None if enrolment_end is None else on(enrolment_end)
        enrolments = (
            EnrolmentFact(arm, trial_day(20, day1), end, status, f"ResearchSubject/{name}/_history/1"),
        )
    risk = ObservationFact(
        "provisional-risk", stratum, stratum, trial_day(19, day1), f"Observation/{name}-risk/_history/1"
    )
    return PatientRecord(
        reference=f"Patient/{name}/_history/1",
        site=site,
        zone=ZONE,
        birth_date=on("2018-04-01"),
        deceased=None if deceased is None else on(deceased),
        conditions=conditions,
        observations=(risk,),
        exposures=tuple(exposures),
        mrd_results=mrd_results,
        enrolments=enrolments,
        adverse_events=adverse_events,
        costs=costs,
    )


PRE, POST, D46 = trial_day(21), trial_day(36), trial_day(46)
LATE_DAY1 = dt.date(2026, 5, 25)  # S8: enrolled 2026-06-13, blinatumomab 2026-06-15..2026-06-28

S1 = patient(
    "S1", arm=STUDY, site=HEFEI, stratum="low",
    mrd_results=(
        mrd("S1-pre-flow", FLOW, PRE, "0.5 %"), mrd("S1-pre-ngs", NGS, PRE, "0.4 %"),
        mrd("S1-post-flow", FLOW, POST, "0.005 %", cells=600_000),
        mrd("S1-post-ngs", NGS, POST, "0.00005 %"),
    ),
    adverse_events=(
        adverse("S1-crs", "Cytokine release syndrome", 2, "2025-01-25"),  # in the window
        adverse("S1-fn-early", "Febrile neutropenia", 3, "2025-01-10"),  # before induction day 19
        adverse("S1-fn-mtx2", "Febrile neutropenia", 4, "2025-03-15"),  # the day HD-MTX 2 starts: excluded
    ),
    costs=(
        cost("S1-a", "2025-01-05", "1000.00"),
        cost("S1-b", "2025-06-30", "500.50"),  # day 181, the last day of the 6 months
        cost("S1-c", "2025-07-03", "9999"),  # day 184: outside
        cost("S1-visit", "2026-03-01", "10"),  # follow-up visit: last contact
    ),
)  # fmt: skip
S2 = patient(
    "S2", arm=STUDY, site=FUZHOU, stratum="intermediate",
    mrd_results=(
        mrd("S2-pre-flow", FLOW, PRE, "1 %"),
        mrd("S2-post-flow", FLOW, POST, "0.02 %"), mrd("S2-post-ngs", NGS, POST, "0.001 %"),
    ),
    conditions=(condition("S2-relapse", "relapse", "2025-07-19"),),
    adverse_events=(
        adverse("S2-fn", "Febrile neutropenia", 3, "2025-02-01"),
        adverse("S2-crs", "cytokine release  syndrome", 1, "2025-01-23"),
    ),
    costs=(cost("S2-a", "2025-02-01", "2000"),),
)  # fmt: skip
S3 = patient(
    "S3", arm=STUDY, site=SHANGHAI, stratum="low",
    mrd_results=(
        mrd("S3-pre-flow", FLOW, PRE, "0.3 %"),
        mrd("S3-post-flow", FLOW, POST, "nd <0.001 %", cells=600_000),
    ),
    costs=(cost("S3-a", "2025-03-01", "3000"), cost("S3-visit", "2026-03-01", "10")),
)  # fmt: skip
S4 = patient(
    "S4", arm=STUDY, site=HEFEI, stratum="intermediate",
    mrd_results=(
        mrd("S4-pre-flow", FLOW, PRE, "0.2 %"), mrd("S4-pre-ngs", NGS, PRE, "0.1 %"),
        mrd("S4-post-flow", FLOW, POST, "<0.05 %"), mrd("S4-post-ngs", NGS, POST, "0.00001 %"),
    ),
    adverse_events=(adverse("S4-neuro", "Neurotoxicity", 3, "2025-01-30"),),
    costs=(cost("S4-a", "2025-04-01", "4000"), cost("S4-visit", "2026-03-01", "10")),
)  # fmt: skip
S5 = patient(
    "S5", arm=STUDY, site=FUZHOU, stratum="low", blinatumomab_days=5, status="withdrawn",
    enrolment_end="2025-01-27", hd_mtx=False,
    mrd_results=(mrd("S5-pre-flow", FLOW, PRE, "0.8 %"),),
    costs=(cost("S5-a", "2025-01-10", "500"),),
)  # fmt: skip
S6 = patient(
    "S6", arm=STUDY, site=SHANGHAI, stratum="intermediate", blinatumomab_days=None, status="withdrawn",
    enrolment_end="2025-01-21", hd_mtx=False,
)  # fmt: skip
S7 = patient(
    "S7", arm=STUDY, site=HEFEI, stratum="intermediate", deceased="2025-10-17",
    mrd_results=(
        mrd("S7-post-flow", FLOW, POST, "0.008 %", cells=600_000), mrd("S7-post-ngs", NGS, POST, "0.0002 %"),
    ),
    adverse_events=(adverse("S7-fn", "Febrile neutropenia", None, "2025-02-10"),),
)  # fmt: skip
S8 = patient(
    "S8", arm=STUDY, site=SHANGHAI, stratum="low", day1=LATE_DAY1, hd_mtx=False,
    mrd_results=(
        mrd("S8-pre-flow", FLOW, trial_day(21, LATE_DAY1), "0.1 %"),
        mrd("S8-post-flow", FLOW, on("2026-07-02"), "0.003 %", cells=600_000),  # after the cut-off
    ),
    adverse_events=(adverse("S8-fn", "Febrile neutropenia", 2, "2026-06-20"),),
    costs=(cost("S8-a", "2026-06-01", "800"),),
)  # fmt: skip
C1 = patient(
    "C1", arm=CONTROL, site=HEFEI, stratum="low", blinatumomab_days=None,
    mrd_results=(
        mrd("C1-d46-flow", FLOW, D46, "0.005 %", cells=600_000), mrd("C1-d46-ngs", NGS, D46, "0.0005 %"),
    ),
    adverse_events=(adverse("C1-fn", "Febrile neutropenia", 3, "2025-02-01"),),
    costs=(cost("C1-a", "2025-02-01", "1000"), cost("C1-visit", "2026-03-01", "10")),
)  # fmt: skip
C2 = patient(
    "C2", arm=CONTROL, site=FUZHOU, stratum="intermediate", blinatumomab_days=None,
    mrd_results=(mrd("C2-d46-flow", FLOW, D46, "0.05 %"), mrd("C2-d46-ngs", NGS, D46, "0.00005 %")),
    conditions=(condition("C2-relapse", "relapse", "2025-04-30"),),
    costs=(cost("C2-a", "2025-02-01", "2500"),),
)  # fmt: skip
C3 = patient(
    "C3", arm=CONTROL, site=SHANGHAI, stratum="intermediate", blinatumomab_days=None, deceased="2025-07-19",
    mrd_results=(mrd("C3-d46-flow", FLOW, D46, "0.02 %"),),
    costs=(cost("C3-a", "2025-02-01", "600"),),
)  # fmt: skip
C4 = patient(
    "C4", arm=CONTROL, site=HEFEI, stratum="low", blinatumomab_days=None,
    mrd_results=(mrd("C4-d46-flow", FLOW, D46, "0.009 %", cells=600_000),),
    conditions=(condition("C4-failure", "induction-failure", "2025-03-01"),),
    costs=(cost("C4-a", "2025-02-01", "700"),),
)  # fmt: skip
N1 = patient("N1", arm=None, site=HEFEI, stratum="low", blinatumomab_days=None)
N4 = patient("N4", arm=None, site=FUZHOU, stratum="intermediate", blinatumomab_days=None)
# Every fact of this patient is dated after the cut-off: no answer may change when it is added.
LATE = patient("L1", arm=STUDY, site=HEFEI, stratum="low", day1=dt.date(2026, 7, 10))

RECORDS = (S1, S2, S3, S4, S5, S6, S7, S8, C1, C2, C3, C4, N1, N4)


def timelines(*records: PatientRecord) -> tuple[PatientTimeline, ...]:
    """Timelines of `records` (default: the whole cohort); cached, since the analyses never mutate them."""
    return _timelines(tuple(records) or RECORDS)


@cache
def _timelines(records: tuple[PatientRecord, ...]) -> tuple[PatientTimeline, ...]:
    return tuple(build_timeline(record=r, protocol=PROTOCOL) for r in records)


def without_result(record: PatientRecord, observation: str) -> PatientRecord:
    """The record as the FHIR layer gives it once `observation` is entered-in-error: the result is gone."""
    kept = tuple(
        r for r in record.mrd_results if r.sample.reference != f"Observation/{observation}/_history/1"
    )
    return replace(record, mrd_results=kept)


def ref(name: str) -> str:
    return f"Patient/{name}/_history/1"
