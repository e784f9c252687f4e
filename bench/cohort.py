"""Synthetic NCT06607419 cohorts: seeded, streamed, written as LIS transaction bundles or as NDJSON (issue 8).

    cohort = generate(patients=90, seed=1)
    cohort.write_bundles(Path("out/bundles"))  # a transaction Bundle per LIS message; sorted = ingest order
    cohort.write_ndjson(Path("out/ndjson"))  # a file per type: final state, stable ids, literal references
    for message in iter_bundles(patients=100_000, seed=1): ...  # lazily, one patient at a time

Patient i is drawn from its own random stream (seed, i) and from the stream of its block of nine patients,
so it is built without the patients before it and memory stays flat at any N. The same seed gives the same
bytes. Values are illustrative, not patient data; rates and amounts are our choice, not the trial's.

What a cohort looks like (vocabulary of PROTOCOL.md section 7; see `Case` for one patient's plan):
- Per block of nine: two historical controls and seven patients screened for the study arm; in every fourth
  block one of those is ineligible (in turn: provisional low risk with D19 MRD below 0.1 %, CNS3, initial
  high risk, sIgM positive, intermediate risk with D19 MRD below 0.01 %) and one is pending (no consent
  yet, so eligibility is incomplete). The others are enrolled. Each block has every site at least twice.
- Noise (`Noise`) and EFS events (`Event`) are placed at a random patient of every block (or of every n-th
  block), so any full block, and the demo's first block, holds each kind at least once.
- Study patients: D19 flow, PRE_BLINA and POST_BLINA flow + NGS, 14 days of blinatumomab in 1-4-day bags,
  a separate day-46 marrow when the POST_BLINA one came before day 43; about 60 % flow negative after it.
  Controls: D19 and D46 (their end of induction), no blinatumomab. Then two HD-MTX courses two weeks
  apart (not after an induction failure), AdverseEvents, ChargeItems (CNY), EFS events and deaths, and a
  last follow-up visit (a peripheral-blood blast count) shortly before the cut-off, where EFS censors.
- Hefei's LIS sends its local MRD codes (the `demo = true` codes of protocols/nct06607419.toml) and its
  pharmacy the ATC code of blinatumomab; Shanghai and Ningbo report NGS per million cells; Fuzhou reports
  sensitivity and cells analysed as Observation.component, the others as extensions (app/fhir/extract.py).

Messages are transactions of conditional writes, so re-sending any of them stores nothing new: a first
report is `POST` with `ifNoneExist=identifier=system|value`; an amendment, a withdrawal (entered-in-error),
a status change or a death is a conditional update `PUT Type?identifier=system|value` of the whole resource.
References inside a message are `urn:uuid:`; to anything sent earlier, `Type?identifier=system|value`.
"""

import functools
import json
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

Json = dict[str, Any]

# All four sites keep Asia/Shanghai time, UTC+08:00 all year (no daylight saving since 1991).
TZ = timezone(timedelta(hours=8))
RECRUITMENT_DAYS = 540  # study patients' induction day 1 spread over the first 18 months
FOLLOW_UP_DAYS = 720  # data cut-off (`Cohort.as_of`): nothing is dated after it
BLOCK = 9

CONCEPT = "urn:mrdhub:concept"
SITE_SYSTEM = "urn:mrdhub:site"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
STUDY_SYSTEM, STUDY_ID = "https://clinicaltrials.gov", "NCT06607419"
STUDY_TITLE = (
    "Efficacy Study of Blinatumomab Clean Up Early Residual Disease for Newly Diagnosed Pediatric "
    "B Lymphoblastic Leukemia"
)
CELLS_EXTENSION = "urn:mrdhub:cells-analysed"
SENSITIVITY_EXTENSION = "urn:mrdhub:mrd-sensitivity"
GRADE_EXTENSION = "urn:mrdhub:ctcae-grade"
BONE_MARROW = ("396997002", "Specimen from bone marrow obtained by aspiration")
PERIPHERAL_BLOOD = ("122551003", "Peripheral blood specimen")

SITES: dict[str, tuple[str, str]] = {  # code -> (name, MRN prefix)
    "HEFEI-APCH": ("Anhui Provincial Children's Hospital", "H"),
    "FUZHOU-FCH": ("Fujian Children's Hospital", "F"),
    "SHANGHAI-SCMC": ("Shanghai Children's Medical Center", "S"),
    "NINGBO-NWCH": ("Ningbo Women and Children's Hospital", "N"),
}
# Local LIS codes a site sends instead of urn:mrdhub:concept: the demo codes the protocol file maps.
LOCAL_MRD_CODES: dict[str, dict[str, tuple[str, str, str]]] = {
    "HEFEI-APCH": {
        "mrd-flow": ("urn:oid:demo-lis:hefei", "FCM-MRD", "Flow MRD (demo code)"),
        "mrd-ngs": ("urn:oid:demo-lis:hefei", "NGS-MRD", "NGS MRD (demo code)"),
    }
}
ATC_PHARMACY_SITES = frozenset({"HEFEI-APCH"})  # blinatumomab as ATC L01FX07
PER_MILLION_NGS_SITES = frozenset({"SHANGHAI-SCMC", "NINGBO-NWCH"})
COMPONENT_SITES = frozenset({"FUZHOU-FCH"})  # sensitivity and cells analysed as Observation.component
UNIT_TEXT = {"%": "%", "/10*6": "cells per million"}

FAMILY_NAMES = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Lin")
GIVEN_NAMES = (
    "Haoran",
    "Yuxuan",
    "Zihan",
    "Yichen",
    "Xinyi",
    "Ruoxi",
    "Junjie",
    "Jiaxin",
    "Yutong",
    "Mingze",
)


class Arm(StrEnum):
    """ResearchSubject.assignedArm (PROTOCOL.md section 7)."""

    STUDY = "blinatumomab"
    CONTROL = "historical-control"


class Screening(StrEnum):
    ENROLLED = "enrolled"
    INELIGIBLE = "ineligible"  # screened for the study arm, fails a criterion: no consent, no enrolment
    PENDING = "pending"  # screened, eligible so far, consent not yet recorded: eligibility incomplete


class Noise(StrEnum):
    LATE_SAMPLE = "late-sample"  # end-of-induction marrow taken after its window: unassigned
    PERIPHERAL_BLOOD = "peripheral-blood"  # an extra day-8 peripheral-blood flow MRD: kept, never assigned
    AMENDED = "amended"  # a result corrected later (same identifier, status amended)
    ENTERED_IN_ERROR = "entered-in-error"  # a result withdrawn later and replaced by a new one
    TOO_FEW_CELLS = "too-few-cells"  # last flow result on fewer events than the protocol's minimum
    INSENSITIVE = "insensitive-not-detected"  # last flow result "not detected" at 0.05 %: not evaluable
    HAEMODILUTED = "haemodiluted"  # last marrow flagged specimen-inadequate
    INTERRUPTION = "interruption"  # blinatumomab paused for a few days (CRS / neurotoxicity), then completed
    INCOMPLETE_COURSE = "incomplete-course"  # blinatumomab stopped for good before 14 days
    WITHDRAWN = "withdrawn"  # ResearchSubject later updated to withdrawn
    LATE_CHARGE = "charge-beyond-6-months"  # a ChargeItem in month 7, outside the cost window
    AGE_EDGE = "age-edge-case"  # infant just over 1 month, almost 18, born on 29 February, or year-month


class Event(StrEnum):
    """EFS events (PROTOCOL.md section 5): Conditions with an onset, and death as Patient.deceasedDateTime."""

    RELAPSE = "relapse"
    INDUCTION_FAILURE = "induction-failure"
    SECOND_MALIGNANCY = "second-malignancy"
    DEATH = "death"


INELIGIBLE_REASONS = (
    "provisional low risk with D19 MRD below 0.1 %",
    "CNS3",
    "initial high risk",
    "sIgM positive",
    "provisional intermediate risk with D19 MRD below 0.01 %",
)
PENDING_REASON = "no consent recorded yet"
# (kind, in every n-th block, who may get it)
NOISE_PLACEMENT: tuple[tuple[Noise, int, str], ...] = (
    (Noise.PERIPHERAL_BLOOD, 1, "any"),
    (Noise.AMENDED, 1, "any"),
    (Noise.ENTERED_IN_ERROR, 1, "any"),
    (Noise.INTERRUPTION, 1, "enrolled"),
    (Noise.LATE_CHARGE, 1, "treated"),
    (Noise.LATE_SAMPLE, 2, "followed"),
    (Noise.TOO_FEW_CELLS, 2, "followed"),
    (Noise.INCOMPLETE_COURSE, 2, "enrolled"),
    (Noise.INSENSITIVE, 2, "treated"),
    (Noise.AGE_EDGE, 2, "any"),
    (Noise.HAEMODILUTED, 3, "treated"),
    (Noise.WITHDRAWN, 3, "enrolled"),
)
EVENT_PLACEMENT: tuple[tuple[Event, int], ...] = (
    (Event.RELAPSE, 1),
    (Event.DEATH, 2),
    (Event.INDUCTION_FAILURE, 5),
    (Event.SECOND_MALIGNANCY, 6),
)


# --- the plan of one patient --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """What a laboratory reports: a value in `unit` (maybe with a comparator), or, with value None,
    "not detected" at the limit of detection `sensitivity` (same unit)."""

    value: float | None
    unit: str = "%"
    comparator: str | None = None
    sensitivity: float | None = None
    cells: int | None = None


@dataclass(frozen=True, slots=True)
class Result:
    key: str  # identifier suffix: FLOW, NGS, BLAST, FLOW-R (a replacement)
    concept: str  # mrd-flow, mrd-ngs, blast-percent
    reading: Reading  # the valid reading; of a withdrawn result, the wrong one
    first_reading: Reading | None = None  # AMENDED: what was reported before the amendment
    withdrawn: bool = False  # ENTERED_IN_ERROR: withdrawn by the correction
    replacement: bool = False  # sent with the correction, replacing the withdrawn result


@dataclass(frozen=True, slots=True)
class Sample:
    tag: str  # D19, PRE, POST, D46, PB (day 8), FU (follow-up): what the clinic meant (a late sample too)
    collected: datetime
    reported: datetime
    specimen: tuple[str, str]  # SNOMED CT code, display
    results: tuple[Result, ...]
    inadequate: bool = False
    corrected: datetime | None = None  # when the amendment or withdrawal was sent

    @property
    def bone_marrow(self) -> bool:
        return self.specimen == BONE_MARROW


@dataclass(frozen=True, slots=True)
class Bag:
    start: datetime
    end: datetime
    status: str  # completed, or stopped (interrupted / abandoned)


@dataclass(frozen=True, slots=True)
class AdverseEvent:
    term: str  # CTCAE v5 term
    grade: int
    at: datetime


@dataclass(frozen=True, slots=True)
class Charge:
    at: datetime
    label: str
    amount_cny: int
    month: int  # billing month from induction day 1 (0: before it, 7: beyond the 6-month window)


@dataclass(frozen=True, slots=True)
class Case:
    """Everything generated for one patient, decided before any resource is built."""

    index: int
    mrn: str
    site: str
    arm: Arm
    screening: Screening
    reason: str  # why ineligible or pending; "" when enrolled
    noise: frozenset[Noise]
    family: str
    given: str
    gender: str
    birth_date: str  # YYYY-MM-DD, or YYYY-MM for the partial-date edge case
    diagnosed: datetime
    day1: date  # induction day 1 = start of the window phase
    risk: str
    cns: str
    sigm: str
    samples: tuple[Sample, ...]
    consent: datetime | None
    enrolled: date | None  # ResearchSubject.period.start
    bags: tuple[Bag, ...]
    hd_mtx: tuple[datetime, ...]
    adverse_events: tuple[AdverseEvent, ...]
    charges: tuple[Charge, ...]
    events: tuple[tuple[Event, datetime], ...]
    withdrawn: date | None

    @property
    def patient_system(self) -> str:
        return _system(self.site, "mrn")

    @property
    def death(self) -> datetime | None:
        return next((at for kind, at in self.events if kind is Event.DEATH), None)

    @property
    def course_end(self) -> date | None:
        """Last infused day of blinatumomab (the POST_BLINA anchor)."""
        return self.bags[-1].end.date() if self.bags else None

    @property
    def course_complete(self) -> bool:
        return bool(self.bags) and Noise.INCOMPLETE_COURSE not in self.noise

    def expects_post_blina_flow(self) -> bool:
        """Whether a usable bone-marrow flow result lies in the POST_BLINA window (completion .. +7 days)."""
        end = self.course_end
        if end is None:
            return False
        return any(
            sample.bone_marrow and end <= sample.collected.date() <= end + timedelta(days=7)
            for sample in self.samples
            for result in sample.results
            if result.concept == "mrd-flow" and not result.withdrawn
        )


# --- cohort -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LisBundle:
    name: str  # file stem: sorted names are the ingest order
    sent: datetime
    bundle: Json


@dataclass(frozen=True, slots=True)
class Cohort:
    patients: int
    seed: int
    start: date  # induction day 1 of the first study patient

    @property
    def as_of(self) -> date:
        return self.start + timedelta(days=FOLLOW_UP_DAYS)

    def case(self, index: int) -> Case:
        if not 0 <= index < self.patients:
            raise IndexError(index)
        role = _block_roles(self.seed, index // BLOCK)[index % BLOCK]
        return _plan(self, index, role)

    def cases(self) -> Iterator[Case]:
        for index in range(self.patients):
            yield self.case(index)

    def bundles(self) -> Iterator[LisBundle]:
        for case in self.cases():
            yield from _messages(case)

    def resources(self) -> Iterator[Json]:
        """Every resource once, in its final state, with its stable id and literal references."""
        for record in _shared_records():
            yield _resource(record)
        for case in self.cases():
            for record in _final_records(case):
                yield _resource(record)

    def write_bundles(self, directory: Path) -> int:
        """One JSON file per message, replacing the *.json files there; returns how many."""
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.json"):
            old.unlink()
        count = 0
        for message in self.bundles():
            text = json.dumps(message.bundle, indent=1, ensure_ascii=False) + "\n"
            (directory / f"{message.name}.json").write_text(text, encoding="utf-8")
            count += 1
        return count

    def write_ndjson(self, directory: Path) -> dict[str, int]:
        """One `<Type>.ndjson` per resource type, replacing the *.ndjson files there; lines per type."""
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.ndjson"):
            old.unlink()
        counts: dict[str, int] = {}
        handles: dict[str, Any] = {}
        try:
            for resource in self.resources():
                kind = resource["resourceType"]
                if kind not in handles:
                    handles[kind] = (directory / f"{kind}.ndjson").open("w", encoding="utf-8")
                handles[kind].write(json.dumps(resource, ensure_ascii=False, separators=(",", ":")) + "\n")
                counts[kind] = counts.get(kind, 0) + 1
        finally:
            for handle in handles.values():
                handle.close()
        return dict(sorted(counts.items()))


def generate(*, patients: int, seed: int, start: date = date(2025, 1, 6)) -> Cohort:
    """A cohort of `patients`; nothing is built until it is iterated or written."""
    if patients < 0:
        raise ValueError("patients must be >= 0")
    return Cohort(patients, seed, start)


def iter_bundles(*, patients: int, seed: int, start: date = date(2025, 1, 6)) -> Iterator[LisBundle]:
    """The cohort's messages, one patient at a time: `LisBundle.bundle` is the transaction Bundle."""
    return generate(patients=patients, seed=seed, start=start).bundles()


# --- block roles: arms, screening, noise and events spread over every block of nine ---------------------


@dataclass(frozen=True, slots=True)
class _Role:
    site: str
    arm: Arm
    screening: Screening
    reason: str
    noise: frozenset[Noise]
    events: frozenset[Event]


@functools.lru_cache(maxsize=4)  # the nine patients of a block are generated one after another
def _block_roles(seed: int, block: int) -> tuple[_Role, ...]:
    rng = random.Random(f"mrdhub-cohort:{seed}:block:{block}")
    slots = list(range(BLOCK))
    rng.shuffle(slots)
    controls, screened = slots[:2], slots[2:]
    screening = dict.fromkeys(screened, Screening.ENROLLED)
    reasons = dict.fromkeys(slots, "")
    if block % 4 == 0:
        screening[screened[0]], reasons[screened[0]] = (
            Screening.INELIGIBLE,
            INELIGIBLE_REASONS[(block // 4) % len(INELIGIBLE_REASONS)],
        )
        screening[screened[1]], reasons[screened[1]] = Screening.PENDING, PENDING_REASON
    enrolled = sorted(s for s in screened if screening[s] is Screening.ENROLLED)
    treated = sorted([*controls, *enrolled])
    groups = {
        "any": sorted(slots),
        "followed": sorted([*treated, *(s for s in screened if screening[s] is Screening.INELIGIBLE)]),
        "treated": treated,
        "enrolled": enrolled,
    }
    noise: dict[int, set[Noise]] = {s: set() for s in slots}
    for kind, every, group in NOISE_PLACEMENT:
        if block % every == 0:
            noise[rng.choice(groups[group])].add(kind)
    events: dict[int, set[Event]] = {s: set() for s in slots}
    for event, every in EVENT_PLACEMENT:
        if block % every:
            continue
        free = treated if event in (Event.RELAPSE, Event.DEATH) else [s for s in treated if not events[s]]
        events[rng.choice(free or treated)].add(event)
    sites = [*SITES, *SITES, rng.choice(list(SITES))]
    rng.shuffle(sites)
    return tuple(
        _Role(
            site=sites[s],
            arm=Arm.CONTROL if s in controls else Arm.STUDY,
            screening=screening.get(s, Screening.ENROLLED),
            reason=reasons[s],
            noise=frozenset(noise[s]),
            events=frozenset(events[s]),
        )
        for s in range(BLOCK)
    )


# --- planning one patient -----------------------------------------------------------------------------


def _plan(cohort: Cohort, index: int, role: _Role) -> Case:
    rng = random.Random(f"mrdhub-cohort:{cohort.seed}:patient:{index}")
    noise, site = role.noise, role.site
    control = role.arm is Arm.CONTROL
    if control:  # historical: CCCG-ALL-2020 patients treated before the trial opened
        day1 = cohort.start - timedelta(days=rng.randint(180, 1100))
    else:
        day1 = cohort.start + timedelta(days=index * RECRUITMENT_DAYS // max(cohort.patients, 1))

    def trial_day(n: int, hour: int = 8, minute: int = 30) -> datetime:
        return _at(day1 + timedelta(days=n - 1), hour, minute)

    risk, cns, sigm = ("low" if rng.random() < 0.45 else "intermediate"), "CNS1", "negative"
    if rng.random() < 0.15:
        cns = "CNS2"
    reason = role.reason
    if reason == "CNS3":
        cns = "CNS3"
    elif reason == "initial high risk":
        risk = "high"
    elif reason == "sIgM positive":
        sigm = "positive"
    elif reason == INELIGIBLE_REASONS[0]:
        risk = "low"
    elif reason == INELIGIBLE_REASONS[4]:
        risk = "intermediate"
    mrd = _Labs(rng, site)

    samples: list[Sample] = []
    if Noise.PERIPHERAL_BLOOD in noise:
        samples.append(mrd.sample("PB", trial_day(8), flow=_loguniform(rng, 0.01, 5), peripheral=True))
    d19 = mrd.sample(
        "D19", trial_day(19 + rng.choice((-1, 0, 0, 0, 1, 2))), flow=_d19_percent(rng, risk, reason)
    )
    samples.append(d19)

    consent: datetime | None = None
    enrolled: date | None = None
    bags: list[Bag] = []
    followed = role.screening is not Screening.PENDING
    treated = followed and role.screening is not Screening.INELIGIBLE
    failure = Event.INDUCTION_FAILURE in role.events
    if role.screening is Screening.ENROLLED and not control:
        # Consent once the D19 result is known (reported at 15:xx), that evening or the next.
        consent = _at(d19.reported.date() + timedelta(days=rng.randint(0, 1)), 17, rng.randint(0, 59))
        enrolled = consent.date()
        start = _at(enrolled + timedelta(days=rng.randint(2, 4)), 10, 0)
        pre_flow = _sig(_d19_value(d19) * _loguniform(rng, 0.15, 1.0))
        samples.append(
            mrd.sample(
                "PRE",
                _at(start.date() - timedelta(days=rng.randint(1, 2)), 8, 30),
                flow=pre_flow,
                ngs=pre_flow * _loguniform(rng, 0.8, 3),
                with_ngs=True,
            )
        )
        bags = _bags(rng, start, noise)
        end = bags[-1].end.date()
        offset = rng.randint(8, 10) if Noise.LATE_SAMPLE in noise else rng.choice((0, 1, 1, 2, 2, 3, 4))
        negative = not failure and rng.random() < (0.68 if Noise.INCOMPLETE_COURSE not in noise else 0.35)
        post_flow = None if negative else _positive_percent(rng, failure)
        post_ngs = _ngs_after(rng, post_flow)
        post_day = end + timedelta(days=offset)
        post = mrd.sample(
            "POST", _at(post_day, 14 if offset == 0 else 8, 30), flow=post_flow, ngs=post_ngs, with_ngs=True
        )
        samples.append(post)
        if (post_day - day1).days + 1 < 43:  # the standard day-46 marrow is still taken
            d46_flow = (
                None if negative and rng.random() < 0.9 else _sig((post_flow or 0.02) * rng.uniform(0.1, 1))
            )
            day = 46 + rng.choice((-1, 0, 0, 1))
            ngs = _ngs_after(rng, d46_flow)
            samples.append(
                mrd.sample("D46", trial_day(day), flow=d46_flow, ngs=ngs, with_ngs=rng.random() < 0.5)
            )
    elif followed:  # controls and screen failures: the day-46 end-of-induction marrow
        day = rng.randint(54, 56) if Noise.LATE_SAMPLE in noise else 46 + rng.choice((-2, -1, 0, 0, 1, 2, 3))
        p_negative = 0.5 if control else 0.7
        flow = None if not failure and rng.random() < p_negative else _positive_percent(rng, failure)
        ngs = _ngs_after(rng, flow)
        samples.append(mrd.sample("D46", trial_day(day), flow=flow, ngs=ngs, with_ngs=rng.random() < 0.8))
    if control:
        consent = _at(day1 - timedelta(days=1), 11, 0)
        enrolled = day1 + timedelta(days=20)  # the comparable origin: where a study patient is enrolled
    samples = _with_noise(rng, samples, noise)

    last_sample = max(s.collected for s in samples)
    hd_mtx: list[datetime] = []
    if followed and not failure:
        first = max(
            trial_day(50 + rng.randint(0, 6), 10, 0), _at(last_sample.date() + timedelta(days=4), 10, 0)
        )
        hd_mtx = [first, first + timedelta(days=14 + rng.randint(-1, 2))]
    events = _events(rng, role, cohort.as_of, enrolled, samples, hd_mtx) if treated else []
    death = next((at for kind, at in events if kind is Event.DEATH), None)
    limit = min(_at(cohort.as_of, 23, 59), death or _at(cohort.as_of, 23, 59))
    hd_mtx = [at for at in hd_mtx if at < limit]
    adverse = (
        _adverse_events(rng, control=control, bags=bags, day1=day1, hd_mtx=hd_mtx, noise=noise)
        if treated
        else []
    )
    if death is not None and len(events) == 1:
        adverse.append(AdverseEvent("Sepsis", 5, death))  # a treatment-related death
    adverse = sorted((a for a in adverse if a.at <= limit), key=lambda a: a.at)
    charges = (
        _charges(rng, day1=day1, samples=samples, bags=bags, hd_mtx=hd_mtx, adverse=adverse, noise=noise)
        if treated
        else []  # screened only: billed outside the trial
    )
    withdrawn = None
    if Noise.WITHDRAWN in noise and bags:
        withdrawn = (
            bags[-1].end.date() + timedelta(days=1)
            if Noise.INCOMPLETE_COURSE in noise
            else samples[-1].collected.date() + timedelta(days=rng.randint(5, 20))
        )
    if treated and death is None:  # the last follow-up visit before the cut-off: EFS censors there
        seen = max(
            [*(s.collected for s in samples), *hd_mtx, *(a.at for a in adverse), *(c.at for c in charges)]
            + [at for _, at in events]
        )
        visit = _at(cohort.as_of - timedelta(days=rng.randint(7, 90)), 9, 30)
        if visit > seen + timedelta(days=14):
            blasts = Result("BLAST", "blast-percent", Reading(0.0))
            reported = visit + timedelta(hours=rng.randint(3, 8))
            samples.append(Sample("FU", visit, reported, PERIPHERAL_BLOOD, (blasts,)))
    return Case(
        index=index,
        mrn=f"{SITES[site][1]}{index + 1:06d}",
        site=site,
        arm=role.arm,
        screening=role.screening,
        reason=reason,
        noise=noise,
        family=rng.choice(FAMILY_NAMES),
        given=rng.choice(GIVEN_NAMES),
        gender="male" if rng.random() < 0.56 else "female",
        birth_date=_birth_date(rng, day1, Noise.AGE_EDGE in noise),
        diagnosed=_at(day1 - timedelta(days=rng.randint(1, 3)), 15, rng.randint(0, 59)),
        day1=day1,
        risk=risk,
        cns=cns,
        sigm=sigm,
        samples=tuple(sorted(samples, key=lambda s: s.collected)),
        consent=consent,
        enrolled=enrolled,
        bags=tuple(bags),
        hd_mtx=tuple(hd_mtx),
        adverse_events=tuple(adverse),
        charges=tuple(c for c in charges if c.at <= limit),
        events=tuple(events),
        withdrawn=withdrawn,
    )


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ)


def _sig(x: float) -> float:
    """Two significant digits, as laboratories report MRD."""
    return float(f"{x:.2g}")


def _loguniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _d19_percent(rng: random.Random, risk: str, reason: str) -> float | None:
    """D19 flow MRD (%): at or above the stratum's threshold for everyone the protocol would take."""
    if reason == INELIGIBLE_REASONS[0]:
        return rng.choice((0.02, 0.03, 0.05, 0.06, 0.08))  # low risk, 0.01 % <= MRD < 0.1 %
    if reason == INELIGIBLE_REASONS[4]:
        return None if rng.random() < 0.5 else _sig(_loguniform(rng, 0.002, 0.0095))
    threshold = 0.1 if risk == "low" else 0.01
    if rng.random() < 0.05:
        return threshold  # exactly at the threshold: eligible (">=")
    return _sig(_loguniform(rng, threshold, 5 if risk == "low" else 8))


def _d19_value(sample: Sample) -> float:
    return next(r.reading.value or 0.005 for r in sample.results if r.concept == "mrd-flow")


def _positive_percent(rng: random.Random, failure: bool) -> float:
    if failure:  # induction failure: MRD >= 1 % at the end of induction
        return _sig(_loguniform(rng, 1, 6))
    return 0.01 if rng.random() < 0.03 else _sig(_loguniform(rng, 0.01, 1.5))


def _ngs_after(rng: random.Random, flow_percent: float | None) -> float | None:
    """NGS MRD (%), None when negative: NGS sees more than flow, so negative less often."""
    if flow_percent is not None:
        return min(flow_percent * _loguniform(rng, 1, 3), 95)
    return None if rng.random() < 0.6 else _loguniform(rng, 0.0001, 0.009)


class _Labs:
    """How one site's laboratory reports MRD: units, negative styles and cells analysed."""

    def __init__(self, rng: random.Random, site: str) -> None:
        self.rng, self.site = rng, site

    def sample(
        self,
        tag: str,
        collected: datetime,
        *,
        flow: float | None,
        ngs: float | None = None,
        with_ngs: bool = False,
        peripheral: bool = False,
    ) -> Sample:
        rng = self.rng
        results = [Result("FLOW", "mrd-flow", self.flow(flow))]
        if with_ngs:
            results.append(Result("NGS", "mrd-ngs", self.ngs(ngs)))
        if not peripheral:
            level = flow or 0.0
            blasts = level * rng.uniform(0.6, 1.4) if level >= 1 else rng.uniform(0.2, 4.5)
            results.append(Result("BLAST", "blast-percent", Reading(round(min(blasts, 80), 1))))
        reported = _at(collected.date() + timedelta(days=rng.randint(1, 3)), 15, rng.randint(0, 59))
        specimen = PERIPHERAL_BLOOD if peripheral else BONE_MARROW
        return Sample(
            tag, collected + timedelta(minutes=rng.randint(0, 50)), reported, specimen, tuple(results)
        )

    def flow(self, percent: float | None) -> Reading:
        rng = self.rng
        cells = rng.randint(50, 200) * 10_000
        if percent is not None and percent >= 0.01:
            return Reading(_sig(min(percent, 95)), cells=cells)
        style = rng.random()
        if percent is not None and style < 0.5:
            return Reading(_sig(max(percent, 0.001)), cells=cells)
        if style < 0.6:
            return Reading(0.01, comparator="<", cells=cells)
        return Reading(None, sensitivity=0.001, cells=cells)  # not detected, 1e-5 limit of detection

    def ngs(self, percent: float | None) -> Reading:
        rng = self.rng
        cells = rng.randint(100, 300) * 10_000
        per_million = self.site in PER_MILLION_NGS_SITES
        unit, factor = ("/10*6", 10_000.0) if per_million else ("%", 1.0)
        if percent is not None:
            return Reading(_sig(max(percent, 0.0001) * factor), unit, cells=cells)
        if rng.random() < 0.25:
            return Reading(0.0001 * factor, unit, comparator="<", cells=cells)
        return Reading(None, unit, sensitivity=0.0001 * factor, cells=cells)


def _with_noise(rng: random.Random, samples: list[Sample], noise: frozenset[Noise]) -> list[Sample]:
    marrow = sorted((s for s in samples if s.bone_marrow), key=lambda s: s.collected)
    by_tag = {s.tag: s for s in marrow}
    last = marrow[-1]
    if noise & {Noise.TOO_FEW_CELLS, Noise.HAEMODILUTED} and last.tag != "D19":
        few = Noise.TOO_FEW_CELLS in noise
        thin = tuple(
            replace(r, reading=replace(r.reading, cells=rng.randint(15, 45) * 10_000))
            if few and r.concept == "mrd-flow"
            else r
            for r in last.results
        )
        by_tag[last.tag] = replace(last, results=thin, inadequate=Noise.HAEMODILUTED in noise)
    if Noise.INSENSITIVE in noise:  # a low-sensitivity panel on a low level (a negative after D19 if any)
        low = [s for s in by_tag.values() if s.tag != "D19" and _flow_percent(s) < 0.05]
        target = low[-1] if low else by_tag[last.tag]
        results: list[Result] = []
        for result in target.results:
            if result.concept == "mrd-flow":
                result = replace(result, reading=Reading(None, sensitivity=0.05, cells=result.reading.cells))
            elif result.concept == "mrd-ngs" and not low:
                factor = 10_000 if result.reading.unit == "/10*6" else 1
                level = _sig(_loguniform(rng, 0.0005, 0.03) * factor)
                result = replace(result, reading=replace(result.reading, value=level, comparator=None))
            results.append(result)
        by_tag[target.tag] = replace(target, results=tuple(results))
    amended = None
    if Noise.AMENDED in noise:
        amended = next(t for t in ("POST", "D46", "D19") if t in by_tag)
        sample = by_tag[amended]
        by_tag[amended] = replace(
            sample,
            results=tuple(_amended(rng, r, amended) if r.key == "FLOW" else r for r in sample.results),
            corrected=_at(sample.reported.date() + timedelta(days=rng.randint(1, 4)), 11, 0),
        )
    if Noise.ENTERED_IN_ERROR in noise:
        tag = next((t for t in ("PRE", "D46", "D19") if t in by_tag and t != amended), None)
        if tag is not None:
            sample = by_tag[tag]
            results = []
            for result in sample.results:
                if result.key == "FLOW":
                    wrong = Reading(_sig(_loguniform(rng, 0.02, 3)), cells=result.reading.cells)
                    results.append(replace(result, reading=wrong, withdrawn=True))
                    results.append(replace(result, key="FLOW-R", replacement=True))
                else:
                    results.append(result)
            by_tag[tag] = replace(
                sample,
                results=tuple(results),
                corrected=_at(sample.reported.date() + timedelta(days=rng.randint(1, 4)), 11, 30),
            )
    return [*(s for s in samples if not s.bone_marrow), *by_tag.values()]


def _flow_percent(sample: Sample) -> float:
    """The flow level a sample showed, 0 for a negative report."""
    reading = next(r.reading for r in sample.results if r.concept == "mrd-flow")
    return reading.value if reading.value is not None and reading.comparator is None else 0.0


def _amended(rng: random.Random, result: Result, tag: str) -> Result:
    """A first report with a slip (a decimal place, a mis-keyed value), amended to `result.reading`."""
    reading = result.reading
    value = reading.value
    if tag == "D19":
        first = _sig(value * 1.3) if value is not None and reading.comparator is None else 0.004
    elif value is None or reading.comparator is not None or value < 0.01:
        first = rng.choice((0.012, 0.02, 0.04))
    else:
        first = _sig(min(value * 10, 95))
    return replace(result, first_reading=Reading(first, cells=reading.cells))


def _bags(rng: random.Random, start: datetime, noise: frozenset[Noise]) -> list[Bag]:
    """Blinatumomab bags of 1-4 days at 15 µg/m²/day, 14 days in all; a pause or an early stop as noise."""
    target = rng.randint(4, 11) if Noise.INCOMPLETE_COURSE in noise else 14
    pause_after = rng.randint(3, min(9, target - 1)) if Noise.INTERRUPTION in noise and target > 3 else None
    bags: list[Bag] = []
    infused, at = 0, start
    while infused < target:
        length = min(rng.choice((1, 2, 2, 3, 3, 4, 4, 4)), target - infused)
        if pause_after is not None and infused < pause_after < infused + length:
            length = pause_after - infused
        end = at + timedelta(days=length)
        infused += length
        paused = pause_after is not None and infused == pause_after
        stopped = paused or (infused == target and target < 14)
        bags.append(Bag(at, end, "stopped" if stopped else "completed"))
        at = end + timedelta(days=rng.randint(2, 4)) if paused else end
    return bags


def _events(
    rng: random.Random,
    role: _Role,
    as_of: date,
    origin: date | None,
    samples: list[Sample],
    hd_mtx: list[datetime],
) -> list[tuple[Event, datetime]]:
    assert origin is not None
    last_day = as_of - timedelta(days=14)

    def between(low: date, high: date) -> datetime | None:
        high = min(high, last_day)
        if high < low:
            return None  # beyond the follow-up: censored
        return _at(low + timedelta(days=rng.randint(0, (high - low).days)), 11, 0)

    found: list[tuple[Event, datetime]] = []
    end_of_induction = max(s.collected for s in samples if s.tag in ("POST", "D46"))
    if Event.INDUCTION_FAILURE in role.events:
        found.append((Event.INDUCTION_FAILURE, _at(end_of_induction.date() + timedelta(days=2), 11, 0)))
    if Event.RELAPSE in role.events and Event.INDUCTION_FAILURE not in role.events:
        at = between(origin + timedelta(days=150), origin + timedelta(days=1000))
        if at is not None:
            found.append((Event.RELAPSE, at))
    if Event.SECOND_MALIGNANCY in role.events:
        at = between(origin + timedelta(days=300), origin + timedelta(days=1100))
        if at is not None:
            found.append((Event.SECOND_MALIGNANCY, at))
    if Event.DEATH in role.events:
        if found:  # after the relapse (or induction failure, or second malignancy)
            after = found[-1][1].date()
            at = between(after + timedelta(days=45), after + timedelta(days=300))
        elif hd_mtx:  # treatment-related, in consolidation
            at = between(hd_mtx[-1].date() + timedelta(days=3), hd_mtx[-1].date() + timedelta(days=25))
        else:
            at = None
        if at is not None:
            found.append((Event.DEATH, at.replace(hour=rng.randint(0, 23), minute=rng.randint(0, 59))))
    return sorted(found, key=lambda e: e[1])


def _adverse_events(
    rng: random.Random,
    *,
    control: bool,
    bags: list[Bag],
    day1: date,
    hd_mtx: list[datetime],
    noise: frozenset[Noise],
) -> list[AdverseEvent]:
    """CTCAE v5 terms and grades; from induction day 19 on, and a few after the second HD-MTX."""
    found: list[AdverseEvent] = []

    def day(n: int) -> datetime:
        return _at(day1 + timedelta(days=n - 1), rng.randint(8, 22), rng.randint(0, 59))

    if bags:
        start = bags[0].start
        paused = next((b for b in bags[:-1] if b.status == "stopped"), None)
        if paused is not None:  # the reason for the interruption
            term = "Cytokine release syndrome" if rng.random() < 0.6 else "Neurotoxicity"
            found.append(AdverseEvent(term, 3, paused.end - timedelta(hours=rng.randint(1, 10))))
        elif rng.random() < 0.3:
            found.append(
                AdverseEvent("Cytokine release syndrome", rng.choice((1, 1, 2)), start + timedelta(hours=30))
            )
        if Noise.INCOMPLETE_COURSE in noise:
            found.append(
                AdverseEvent("Neurotoxicity", rng.choice((3, 3, 4)), bags[-1].end - timedelta(hours=3))
            )
        elif rng.random() < 0.12:
            found.append(
                AdverseEvent("Neurotoxicity", rng.choice((1, 2)), start + timedelta(days=rng.randint(2, 8)))
            )
    if rng.random() < 0.45:
        found.append(AdverseEvent("Febrile neutropenia", rng.choice((3, 3, 3, 4)), day(rng.randint(20, 45))))
    if rng.random() < 0.25:
        found.append(
            AdverseEvent("Alanine aminotransferase increased", rng.choice((2, 3)), day(rng.randint(25, 50)))
        )
    if hd_mtx and rng.random() < 0.3:
        found.append(
            AdverseEvent("Mucositis oral", rng.choice((2, 3)), hd_mtx[0] + timedelta(days=rng.randint(3, 6)))
        )
    if hd_mtx and rng.random() < 0.08:
        found.append(
            AdverseEvent("Sepsis", rng.choice((3, 4)), hd_mtx[0] + timedelta(days=rng.randint(7, 12)))
        )
    if len(hd_mtx) > 1 and rng.random() < 0.2:  # after the AE window closes
        found.append(AdverseEvent("Mucositis oral", 2, hd_mtx[1] + timedelta(days=rng.randint(3, 6))))
    return found


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, min(day.day, last))


def _charges(
    rng: random.Random,
    *,
    day1: date,
    samples: list[Sample],
    bags: list[Bag],
    hd_mtx: list[datetime],
    adverse: list[AdverseEvent],
    noise: frozenset[Noise],
) -> list[Charge]:
    """Monthly statement lines per cost category, from induction day 1; the diagnostic work-up the day
    before it and, as noise, a month-7 line fall outside the 6-month cost window. Illustrative amounts in
    CNY, not any hospital's tariff."""
    months = [_add_months(day1, m) for m in range(8)]

    def month_of(at: datetime) -> int:
        return sum(at.date() >= m for m in months)

    lines: dict[tuple[int, str], int] = {}

    def bill(at: datetime, category: str, amount: int) -> None:
        month = month_of(at)
        if 1 <= month <= 6:
            lines[month, category] = lines.get((month, category), 0) + amount

    diagnostics, drugs, ward = "Laboratory and MRD diagnostics", "Drugs", "Ward and nursing"
    for sample in samples:
        with_ngs = any(r.concept == "mrd-ngs" for r in sample.results)
        bill(sample.collected, diagnostics, 1800 + 650 * sample.bone_marrow + 6500 * with_ngs)
    for bag in bags:  # blinatumomab, illustratively 3,900 per day of infusion
        bill(bag.start, drugs, 3900 * round((bag.end - bag.start) / timedelta(days=1)))
    for at in hd_mtx:
        bill(at, drugs, rng.randint(70, 90) * 100)
    for event in adverse:
        if event.term in ("Febrile neutropenia", "Sepsis"):
            bill(event.at, drugs, rng.randint(20, 90) * 100)
    for month in range(1, 7):
        bill(
            _at(months[month - 1], 12, 0),
            ward,
            (rng.randint(80, 260) if month <= 3 else rng.randint(10, 60)) * 100,
        )
        bill(_at(months[month - 1], 12, 0), drugs, rng.randint(20, 120) * 100)
    charges = [Charge(_at(day1 - timedelta(days=1), 9, 0), "Diagnostic work-up", 5200, 0)]
    for (month, category), amount in sorted(lines.items()):
        billed = _at(min(months[month - 1] + timedelta(days=27), months[month] - timedelta(days=1)), 18, 0)
        charges.append(Charge(billed, category, amount, month))
    if Noise.LATE_CHARGE in noise:
        at = _at(months[6] + timedelta(days=rng.randint(2, 25)), 10, 0)
        charges.append(Charge(at, "Maintenance chemotherapy, outpatient", rng.randint(15, 60) * 100, 7))
    return sorted(charges, key=lambda c: (c.at, c.label))


def _birth_date(rng: random.Random, day1: date, edge: bool) -> str:
    """Ages at diagnosis peak at 2-5 years; edge cases stay eligible on the enrolment date."""
    if edge:
        kind = rng.choice(("infant", "almost-18", "leap-day", "year-month"))
        if kind == "infant":  # just over one month old at diagnosis
            return (day1 - timedelta(days=rng.randint(34, 40))).isoformat()
        if kind == "almost-18":  # 18 two months after induction day 1
            turns = day1 + timedelta(days=60)
            return turns.replace(year=turns.year - 18, day=min(turns.day, 28)).isoformat()
        if kind == "leap-day":
            return date(
                rng.choice([y for y in range(day1.year - 16, day1.year - 2) if y % 4 == 0]), 2, 29
            ).isoformat()
        year_month = day1 - timedelta(days=rng.randint(4 * 365, 12 * 365))
        return f"{year_month.year:04d}-{year_month.month:02d}"
    band = rng.random()
    years = (
        rng.uniform(0.2, 1)
        if band < 0.03
        else rng.uniform(1, 5)
        if band < 0.55
        else rng.uniform(5, 10)
        if band < 0.8
        else rng.uniform(10, 17.5)
    )
    return (day1 - timedelta(days=round(years * 365.25))).isoformat()


# --- resources ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    """A resource with its stable id (= its business identifier's value) and literal references."""

    type: str
    id: str
    system: str
    body: Json  # without resourceType and id

    @property
    def ref(self) -> str:
        return f"{self.type}/{self.id}"


@dataclass(frozen=True, slots=True)
class _Write:
    record: _Record
    update: bool = False  # conditional update (PUT Type?identifier=...) instead of conditional create


def _system(site: str, kind: str) -> str:
    return f"urn:mrdhub:synthetic:{site.lower()}:{kind}"


def _record(kind: str, identifier: str, system: str, **body: Any) -> _Record:
    ident = {"system": system, "value": identifier}
    # AdverseEvent.identifier is a single Identifier in R4; elsewhere a list.
    return _Record(
        kind, identifier, system, {"identifier": ident if kind == "AdverseEvent" else [ident], **body}
    )


def _coded(system: str, code: str, display: str | None = None, text: str | None = None) -> Json:
    coding: Json = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], **({"text": text} if text else {})}


def _concept(code: str, text: str | None = None) -> Json:
    return _coded(CONCEPT, code, text=text)


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def _ref(target: str) -> Json:
    return {"reference": target}


def _organization(site: str) -> _Record:
    return _record("Organization", site, SITE_SYSTEM, active=True, name=SITES[site][0])


def _study() -> _Record:
    arms = [{"name": arm.value} for arm in Arm]
    return _record("ResearchStudy", STUDY_ID, STUDY_SYSTEM, title=STUDY_TITLE, status="active", arm=arms)


def _shared_records() -> list[_Record]:
    return [*(_organization(site) for site in SITES), _study()]


def _quantity(value: float, unit: str, comparator: str | None = None) -> Json:
    quantity: Json = {"value": value}
    if comparator:
        quantity["comparator"] = comparator
    return quantity | {"unit": UNIT_TEXT.get(unit, unit), "system": UCUM, "code": unit}


class _Patient:
    """The records and messages of one patient."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.ref = f"Patient/{case.mrn}"
        self.subject = _ref(self.ref)
        self.org = _organization(case.site)
        self.messages: list[tuple[datetime, str, list[_Write]]] = []
        self.registered = _at(case.day1, 0, 0)  # when the ResearchSubject was first sent

    def system(self, kind: str) -> str:
        return _system(self.case.site, kind)

    def send(self, at: datetime, kind: str, *records: _Record, update: bool = False) -> None:
        self.messages.append((at, kind, [_Write(r, update) for r in records]))

    def send_with_patient(self, at: datetime, kind: str, *records: _Record) -> None:
        """A message that carries the patient and its site, as LIS and billing messages do."""
        self.send(at, kind, self.org, self.patient(), *records)

    def patient(self, deceased: datetime | None = None) -> _Record:
        c = self.case
        body: Json = {
            "name": [{"family": c.family, "given": [c.given]}],
            "gender": c.gender,
            "birthDate": c.birth_date,
        }
        if deceased is not None:
            body["deceasedDateTime"] = _iso(deceased)
        body["managingOrganization"] = _ref(self.org.ref)
        return _record("Patient", c.mrn, c.patient_system, **body)

    def observation(self, suffix: str, code: str, value: str, at: datetime) -> _Record:
        return _record(
            "Observation",
            f"{self.case.mrn}-{suffix}",
            self.system("obs"),
            status="final",
            code=_concept(code),
            subject=self.subject,
            effectiveDateTime=_iso(at),
            valueCodeableConcept=_concept(value),
        )

    def condition(self, suffix: str, code: Json, onset: datetime, text: str) -> _Record:
        return _record(
            "Condition",
            f"{self.case.mrn}-{suffix}",
            self.system("dx"),
            clinicalStatus=_coded("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            verificationStatus=_coded(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"
            ),
            code=code | {"text": text},
            subject=self.subject,
            onsetDateTime=_iso(onset),
            recordedDate=_iso(onset + timedelta(hours=4)),
        )

    def administration(
        self, suffix: str, medication: Json, start: datetime, end: datetime, status: str, **more: Any
    ) -> _Record:
        return _record(
            "MedicationAdministration",
            f"{self.case.mrn}-{suffix}",
            self.system("mar"),
            status=status,
            **more,
            medicationCodeableConcept=medication,
            subject=self.subject,
            effectivePeriod={"start": _iso(start), "end": _iso(end)},
        )

    def specimen(self, sample: Sample) -> _Record:
        body: Json = {
            "status": "available",
            "type": _coded(SNOMED, *sample.specimen),
            "subject": self.subject,
            "collection": {"collectedDateTime": _iso(sample.collected)},
        }
        if sample.inadequate:
            body["condition"] = [_concept("specimen-inadequate", "haemodiluted")]
        return _record("Specimen", f"{self.case.mrn}-{sample.tag}", self.system("specimen"), **body)

    def result(self, sample: Sample, result: Result, reading: Reading, status: str) -> _Record:
        c = self.case
        changed = status != "final"  # sent with the correction: amended or entered-in-error
        local = LOCAL_MRD_CODES.get(c.site, {}).get(result.concept)
        code = _coded(local[0], local[1], local[2], text=local[2]) if local else _concept(result.concept)
        body: Json = {}
        extras: list[tuple[str, str, Json]] = []  # (extension url, component code, value)
        if reading.sensitivity is not None:
            extras.append(
                (
                    SENSITIVITY_EXTENSION,
                    "mrd-sensitivity",
                    {"valueQuantity": _quantity(reading.sensitivity, reading.unit)},
                )
            )
        if reading.cells is not None:
            extras.append((CELLS_EXTENSION, "cells-analysed", {"valueInteger": reading.cells}))
        as_component = c.site in COMPONENT_SITES
        if extras and not as_component:
            body["extension"] = [{"url": url} | value for url, _, value in extras]
        body |= {
            "status": status,
            "category": [_coded("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")],
            "code": code,
            "subject": self.subject,
            "effectiveDateTime": _iso(sample.collected),
            "issued": _iso(
                sample.corrected if sample.corrected and (changed or result.replacement) else sample.reported
            ),
        }
        if reading.value is None:
            body["valueCodeableConcept"] = _concept("not-detected", "not detected")
        else:
            body["valueQuantity"] = _quantity(reading.value, reading.unit, reading.comparator)
        body["specimen"] = _ref(f"Specimen/{c.mrn}-{sample.tag}")
        if extras and as_component:
            body["component"] = [{"code": _concept(code)} | value for _, code, value in extras]
        return _record("Observation", f"{c.mrn}-{sample.tag}-{result.key}", self.system("result"), **body)

    def report(self, sample: Sample, results: list[_Record], status: str) -> _Record:
        mrd = any(r.concept != "blast-percent" for r in sample.results)
        what = ("Bone marrow" if sample.bone_marrow else "Peripheral blood") + (
            " MRD" if mrd else " blast count"
        )
        return _record(
            "DiagnosticReport",
            f"{self.case.mrn}-{sample.tag}-RPT",
            self.system("report"),
            status=status,
            category=[_coded("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB")],
            code={"text": f"{what} report"},
            subject=self.subject,
            effectiveDateTime=_iso(sample.collected),
            issued=_iso(sample.corrected if status != "final" and sample.corrected else sample.reported),
            specimen=[_ref(f"Specimen/{self.case.mrn}-{sample.tag}")],
            result=[_ref(r.ref) for r in results],
        )


def _messages(case: Case) -> list[LisBundle]:
    """The LIS / EHR messages of one patient as transaction bundles, in the order they were sent."""
    ordered = _sent_messages(case)
    identity = {w.record.ref: w.record.system for _, _, writes in ordered for w in writes}
    identity |= {r.ref: r.system for r in _shared_records()}
    return [
        LisBundle(f"{case.index + 1:06d}-{k:02d}-{case.mrn}-{kind}", sent, _bundle(writes, identity))
        for k, (sent, kind, writes) in enumerate(ordered)
    ]


def _sent_messages(case: Case) -> list[tuple[datetime, str, list[_Write]]]:
    p = _Patient(case)
    c = case
    diagnosed = c.diagnosed
    all_code = {"coding": [{"system": ICD10, "code": "C91.0"}, {"system": CONCEPT, "code": "all"}]}
    p.send(
        diagnosed + timedelta(hours=2),
        "registration",
        p.org,
        p.patient(),
        p.condition("DX", all_code, diagnosed, "B-cell acute lymphoblastic leukaemia"),
        p.observation("MORPH", "bm-morphology", "ALL", diagnosed),
        p.observation("IMMUNO", "immunophenotype", "B-ALL", diagnosed),
        p.observation("SIGM", "sigm", c.sigm, diagnosed),
        p.observation("CNS", "cns-status", c.cns, diagnosed),
    )
    window_start = _at(c.day1, 8, 0)
    window_end = window_start + timedelta(days=3, hours=12)
    p.send(
        window_end,
        "induction",
        p.observation("RISK", "provisional-risk", c.risk, window_start + timedelta(hours=2)),
        p.administration(
            "WINDOW",
            {"text": "dexamethasone (window phase)"},
            window_start,
            window_end,
            "completed",
            category=_concept("window-phase"),
        ),
    )
    for sample in c.samples:
        _send_sample(p, sample)
    consent_ref = f"Consent/{c.mrn}-CONSENT"
    if c.consent is not None and c.enrolled is not None:
        consent = _record(
            "Consent",
            f"{c.mrn}-CONSENT",
            p.system("consent"),
            status="active",
            scope=_coded("http://terminology.hl7.org/CodeSystem/consentscope", "research"),
            category=[_concept("consent-research")],
            patient=p.subject,
            dateTime=_iso(c.consent),
            organization=[_ref(p.org.ref)],
            policyRule=_coded("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN"),
        )
        registered = c.consent + timedelta(hours=6)
        if c.arm is Arm.CONTROL:  # the trial office registers historical controls after their induction
            registered = max(registered, _at(c.day1 + timedelta(days=90), 9, 0))
        subject = _subject_record(p, consent_ref, "on-study", None)
        p.send(registered, "enrolment", _study(), consent, subject)
        p.registered = registered
    _send_treatment(p)
    _send_adverse_events(p)
    _send_charges(p)
    _send_status(p, consent_ref)
    return [m for _, m in sorted(enumerate(p.messages), key=lambda m: (m[1][0], m[0]))]


def _subject_record(p: _Patient, consent_ref: str, status: str, end: date | None) -> _Record:
    c = p.case
    period: Json = {"start": (c.enrolled or c.day1).isoformat()}
    if end is not None:
        period["end"] = end.isoformat()
    return _record(
        "ResearchSubject",
        f"{STUDY_ID}-{c.mrn}",
        p.system("subject"),
        status=status,
        period=period,
        study=_ref(f"ResearchStudy/{STUDY_ID}"),
        individual=p.subject,
        assignedArm=c.arm.value,
        consent=_ref(consent_ref),
    )


def _send_sample(p: _Patient, sample: Sample) -> None:
    """The lab report; later, its amendment or withdrawal as conditional updates of the same identifiers."""
    first = [r for r in sample.results if not r.replacement]
    firsts = [p.result(sample, r, r.first_reading or r.reading, "final") for r in first]
    kind = "follow-up" if sample.tag == "FU" else f"mrd-{sample.tag.lower()}"
    p.send_with_patient(sample.reported, kind, p.specimen(sample), p.report(sample, firsts, "final"), *firsts)
    if sample.corrected is None:
        return
    changed: list[_Record] = []
    current: list[_Record] = []
    added: list[_Record] = []
    status = "final"
    for result in sample.results:
        if result.first_reading is not None:
            status = "amended"
            changed.append(p.result(sample, result, result.reading, "amended"))
            current.append(changed[-1])
        elif result.withdrawn:
            status = "corrected"
            changed.append(p.result(sample, result, result.reading, "entered-in-error"))
        elif result.replacement:
            added.append(p.result(sample, result, result.reading, "final"))
            current.append(added[-1])
        else:
            current.append(next(f for f in firsts if f.id.endswith(f"-{result.key}")))
    report = p.report(sample, current, status)
    updates = [_Write(r, update=True) for r in [*changed, report]]
    p.messages.append((sample.corrected, f"{kind}-{status}", [*(_Write(r) for r in added), *updates]))


def _send_treatment(p: _Patient) -> None:
    c = p.case
    if c.bags:
        if c.site in ATC_PHARMACY_SITES:
            medication = _coded(ATC, "L01FX07", "blinatumomab", text="blinatumomab")
        else:
            medication = _concept("blinatumomab", "blinatumomab")
        course: list[_Record] = []
        segment = 1
        for n, bag in enumerate(c.bags, start=1):
            course.append(
                p.administration(
                    f"BLIN-{n:02d}",
                    medication,
                    bag.start,
                    bag.end,
                    bag.status,
                    dosage={"text": "15 µg/m²/day, continuous intravenous infusion"},
                )
            )
            if n == len(c.bags) or c.bags[n].start > bag.end:  # the pharmacy reports each run of bags
                p.send_with_patient(bag.end + timedelta(hours=2), f"blinatumomab-{segment}", *course)
                course, segment = [], segment + 1
    if c.hd_mtx:  # both consolidation courses, reported after the second
        courses = [
            p.administration(
                f"HDMTX-{n}",
                _concept("hd-methotrexate", "methotrexate, high dose (24-hour infusion)"),
                start,
                start + timedelta(days=1),
                "completed",
            )
            for n, start in enumerate(c.hd_mtx, start=1)
        ]
        p.send(c.hd_mtx[-1] + timedelta(days=1, hours=2), "hd-mtx", *courses)


def _send_adverse_events(p: _Patient) -> None:
    """A safety report at the start of the second HD-MTX course (the end of the AE window), one later."""
    c = p.case
    cut = c.hd_mtx[1] if len(c.hd_mtx) > 1 else None
    reports: dict[str, list[_Record]] = {}
    for n, event in enumerate(c.adverse_events, start=1):
        record = _record(
            "AdverseEvent",
            f"{c.mrn}-AE{n:02d}",
            p.system("ae"),
            extension=[{"url": GRADE_EXTENSION, "valueInteger": event.grade}],
            actuality="actual",
            event={"text": event.term},
            subject=p.subject,
            date=_iso(event.at),
        )
        reports.setdefault(
            "adverse-events" if cut is None or event.at < cut else "adverse-events-late", []
        ).append(record)
    for kind, records in reports.items():
        last = max(datetime.fromisoformat(r.body["date"]) for r in records)
        p.send(max(last + timedelta(days=2), (cut or last) + timedelta(hours=6)), kind, *records)


def _send_charges(p: _Patient) -> None:
    """Quarterly statements from the hospital billing system (months 1-3, 4-6, then later charges)."""
    c = p.case
    quarters: dict[int, list[_Record]] = {}
    for n, charge in enumerate(c.charges, start=1):
        quarters.setdefault(max(charge.month - 1, 0) // 3, []).append(
            _record(
                "ChargeItem",
                f"{c.mrn}-CHG{n:03d}",
                p.system("billing"),
                status="billed",
                code={"text": charge.label},
                subject=p.subject,
                occurrenceDateTime=_iso(charge.at),
                priceOverride={"value": float(charge.amount_cny), "currency": "CNY"},
            )
        )
    for quarter, items in quarters.items():
        sent = _at(_add_months(c.day1, 3 * quarter + 3) + timedelta(days=5), 9, 0)
        p.send_with_patient(sent, f"charges-q{quarter + 1}", *items)


def _send_status(p: _Patient, consent_ref: str) -> None:
    """Withdrawal; EFS events, the first ending the study (off-study); death as an updated Patient."""
    c = p.case
    if c.withdrawn is not None:
        withdrawn = _subject_record(p, consent_ref, "withdrawn", c.withdrawn)
        p.send(
            max(_at(c.withdrawn, 16, 0), p.registered + timedelta(hours=1)),
            "withdrawal",
            withdrawn,
            update=True,
        )
    texts = {
        Event.RELAPSE: ("RELAPSE", "Relapse of B-ALL (bone marrow)"),
        Event.INDUCTION_FAILURE: ("INDFAIL", "Induction failure (MRD >= 1 % at the end of induction)"),
        Event.SECOND_MALIGNANCY: ("SMN", "Second malignancy (therapy-related acute myeloid leukaemia)"),
    }
    off_study = c.withdrawn is None
    for event, at in c.events:
        writes: list[_Write] = []
        if event is Event.DEATH:
            writes.append(_Write(p.patient(deceased=at), update=True))
        else:
            suffix, text = texts[event]
            writes.append(_Write(p.condition(suffix, _concept(event.value), at, text)))
        if off_study:
            writes.append(_Write(_subject_record(p, consent_ref, "off-study", at.date()), update=True))
            off_study = False
        # A historical control's event may predate its registration: the update follows it.
        p.messages.append(
            (max(at + timedelta(days=1), p.registered + timedelta(hours=2)), event.value, writes)
        )


def _bundle(writes: list[_Write], identity: dict[str, str]) -> Json:
    local = {
        w.record.ref: f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:mrdhub:synthetic:' + w.record.ref)}"
        for w in writes
    }

    def target(reference: str) -> str:
        if reference in local:
            return local[reference]
        kind, _, ident = reference.partition("/")
        return f"{kind}?identifier={identity[reference]}|{ident}"

    entries = []
    for write in writes:
        r = write.record
        query = f"identifier={r.system}|{r.id}"
        request = (
            {"method": "PUT", "url": f"{r.type}?{query}"}
            if write.update
            else {"method": "POST", "url": r.type, "ifNoneExist": query}
        )
        entries.append(
            {
                "fullUrl": local[r.ref],
                "resource": {"resourceType": r.type, **_map_refs(r.body, target)},
                "request": request,
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _map_refs(node: Any, replace_ref: Callable[[str], str]) -> Any:
    if isinstance(node, dict):
        return {
            k: replace_ref(v) if k == "reference" and isinstance(v, str) else _map_refs(v, replace_ref)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_map_refs(v, replace_ref) for v in node]
    return node


def _final_records(case: Case) -> list[_Record]:
    """Each of the patient's resources as its last message left it (shared ones excluded)."""
    shared = {r.ref for r in _shared_records()}
    final: dict[str, _Record] = {}
    for _, _, writes in _sent_messages(case):
        for write in writes:
            if write.record.ref not in shared and (write.update or write.record.ref not in final):
                final[write.record.ref] = write.record
    return list(final.values())


def _resource(record: _Record) -> Json:
    return {"resourceType": record.type, "id": record.id, **record.body}
