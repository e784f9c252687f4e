"""A patient's trial timeline: anchors from the data, the blinatumomab course, every MRD result classified
and placed, and the chosen result at each timepoint (PROTOCOL.md sections 2 and 3).

Everything here is derived from a `PatientRecord` and the `Protocol` on each call, so a correction, a
withdrawal or a late anchor is reflected at once: nothing is cached that could go stale.
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from app.domain.mrd import MrdClassification, classify
from app.domain.protocol import AnchorEvent, Protocol
from app.domain.record import ExposureFact, PatientRecord
from app.domain.timepoints import (
    Administration,
    Anchor,
    AnchorCandidate,
    AnchorSourceKind,
    Course,
    Placement,
    TimepointOutcome,
    infusion_courses,
    place_results,
    resolve_anchors,
    select,
)


@dataclass(frozen=True, slots=True)
class PatientTimeline:
    record: PatientRecord
    anchors: dict[str, Anchor]
    courses: dict[str, Course | None]  # by course concept, the first course (section 1: one course)
    placements: tuple[Placement, ...]
    outcomes: tuple[TimepointOutcome, ...]
    classifications: dict[str, MrdClassification]  # by Observation reference

    def outcome(self, timepoint: str, assay: str) -> TimepointOutcome | None:
        return next((o for o in self.outcomes if o.timepoint == timepoint and o.assay == assay), None)


def build_timeline(*, record: PatientRecord, protocol: Protocol) -> PatientTimeline:
    candidates, courses = anchor_candidates(record=record, protocol=protocol)
    anchors = resolve_anchors(candidates=[*candidates, *record.manual_anchors])
    placements = tuple(
        place_results(
            results=[r.sample for r in record.mrd_results],
            anchors=anchors,
            timepoints=protocol.timepoints,
            zone=record.zone,
            timepoint_specimens=protocol.results.timepoint_specimens,
        )
    )
    outcomes = tuple(select(placements=placements, anchors=anchors, timepoints=protocol.timepoints))
    classifications = {
        r.sample.reference: classify(measurement=r.measurement, rule=protocol.assays[r.measurement.assay])
        for r in record.mrd_results
    }
    return PatientTimeline(record, anchors, courses, placements, outcomes, classifications)


def anchor_candidates(
    *, record: PatientRecord, protocol: Protocol
) -> tuple[list[AnchorCandidate], dict[str, Course | None]]:
    """Anchor dates proposed by the data.

    Course anchors come from the first infusion course of the concept. A `start` anchor with an
    occurrence is the start of that episode of the concept (hd-mtx-2 = second HD-MTX episode). Where the
    protocol names a single occurrence of a concept (one window phase), every separate episode in the
    data proposes itself, so two window phases far apart are a conflict for the trial office, not a
    silent choice (section 2).
    """
    candidates: list[AnchorCandidate] = []
    courses: dict[str, Course | None] = {}
    occurrences: dict[str, int] = {}
    for definition in protocol.anchors.values():
        occurrences[definition.concept] = max(occurrences.get(definition.concept, 0), definition.occurrence)
    for name, definition in protocol.anchors.items():
        exposures = [e for e in record.exposures if definition.concept in (e.concept, *e.concepts)]
        if definition.event in (AnchorEvent.COURSE_START, AnchorEvent.COURSE_END):
            rule = protocol.courses[definition.concept]
            found = infusion_courses(administrations=_administrations(exposures, record.zone), rule=rule)
            course = found[0] if found else None
            courses[definition.concept] = course
            if course is not None:
                candidates.extend(_course_candidate(course, name, definition.event))
            continue
        episodes = _episodes(exposures, record.zone)
        use_end = definition.event is AnchorEvent.END
        if occurrences[definition.concept] == 1:
            chosen = episodes
        else:
            chosen = episodes[definition.occurrence - 1 : definition.occurrence]
        for episode in chosen:
            day = episode.end if use_end else episode.start
            if day is not None:
                candidates.append(AnchorCandidate(name, day, AnchorSourceKind.DATA, episode.reference))
    return candidates, courses


def _course_candidate(course: Course, name: str, event: AnchorEvent) -> list[AnchorCandidate]:
    if event is AnchorEvent.COURSE_START:
        return [AnchorCandidate(name, course.start, AnchorSourceKind.DATA, course.references[0])]
    if course.end is None:
        return []  # still infusing: no completion anchor yet
    return [AnchorCandidate(name, course.end, AnchorSourceKind.DATA, course.references[-1])]


def _administrations(exposures: Sequence[ExposureFact], zone: str) -> list[Administration]:
    found = []
    for exposure in exposures:
        start = exposure.start.day_in(zone) if exposure.start else None
        if start is None:
            continue  # an imprecise date cannot anchor a trial day
        end = None if exposure.ongoing else (exposure.end.day_in(zone) if exposure.end else start)
        found.append(Administration(start, end, exposure.reference))
    return found


@dataclass(frozen=True, slots=True)
class _Episode:
    start: dt.date
    end: dt.date | None
    reference: str


def _episodes(exposures: Sequence[ExposureFact], zone: str) -> list[_Episode]:
    """Exposures grouped into episodes: one that starts within a day of the previous end continues it."""
    episodes: list[_Episode] = []
    for admin in sorted(_administrations(exposures, zone), key=lambda a: (a.start, a.reference)):
        last = episodes[-1] if episodes else None
        reach = None if last is None else (last.end or last.start)
        if last is not None and reach is not None and admin.start <= reach + dt.timedelta(days=1):
            end = None if admin.end is None or last.end is None else max(last.end, admin.end)
            episodes[-1] = _Episode(last.start, end, last.reference)
        else:
            episodes.append(_Episode(admin.start, admin.end, admin.reference))
    return episodes
