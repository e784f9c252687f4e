"""What `explain` shows: for every number, the patients and the resource versions behind it (issue 6).

Every result keeps, per count, the patients that made it as `PatientEntry` values (patient reference,
status, the versioned resources used) and lists the patients it left out as `Exclusion` values with the
reason. Both are always computed; the `*_to_json` functions print the entries only with `explain=True`,
but exclusions and flags always.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from app.domain.endpoints.analysis_sets import Membership
from app.domain.endpoints.cohort import Cohort, CohortPatient
from app.domain.endpoints.reporting import Json


@dataclass(frozen=True, slots=True)
class PatientEntry:
    patient: str
    status: str  # what the patient contributes, e.g. "negative", "imputed-not-negative", "event"
    resources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Exclusion:
    patient: str
    arm: str | None
    reason: str
    resources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Flag:
    patient: str
    flag: str


def entry(membership: Membership, status: str, *extra: str) -> PatientEntry:
    return PatientEntry(
        membership.patient.reference, status, tuple(dict.fromkeys((*membership.resources, *extra)))
    )


def excluded_members(memberships: Iterable[Membership]) -> list[Exclusion]:
    return [
        Exclusion(m.patient.reference, m.patient.arm, m.reason or "not in the analysis set", m.resources)
        for m in memberships
    ]


def cohort_exclusions(cohort: Cohort) -> list[Exclusion]:
    return [Exclusion(e.reference, e.arm, e.reason, e.references) for e in cohort.excluded]


def flags_of(patients: Iterable[CohortPatient]) -> tuple[Flag, ...]:
    return tuple(
        sorted({Flag(p.reference, f) for p in patients for f in p.flags}, key=lambda f: (f.patient, f.flag))
    )


def sorted_exclusions(exclusions: Iterable[Exclusion]) -> tuple[Exclusion, ...]:
    return tuple(sorted(exclusions, key=lambda e: (e.patient, e.reason)))


def entries_json(entries: Iterable[PatientEntry]) -> list[Json]:
    return [
        {"patient": e.patient, "status": e.status, "resources": list(e.resources)}
        for e in sorted(entries, key=lambda e: (e.patient, e.status))
    ]


def exclusions_json(exclusions: Iterable[Exclusion]) -> list[Json]:
    return [
        {"patient": e.patient, "arm": e.arm, "reason": e.reason, "resources": list(e.resources)}
        for e in sorted(exclusions, key=lambda e: (e.patient, e.reason))
    ]


def flags_json(flags: Iterable[Flag]) -> list[Json]:
    return [{"patient": f.patient, "flag": f.flag} for f in sorted(flags, key=lambda f: (f.patient, f.flag))]
