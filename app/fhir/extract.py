"""Reading stored FHIR resources into a `PatientRecord`: codes mapped to trial concepts by the protocol.

What is read where (also in the README):
- MRD value: `valueQuantity` (value, UCUM `code`, `comparator`), or "not detected" as a
  `valueCodeableConcept` or `interpretation` coding that the protocol maps to the value `not-detected`.
- Sensitivity (limit of detection): extension `urn:mrdhub:mrd-sensitivity` (valueQuantity), or a component
  coded `urn:mrdhub:concept|mrd-sensitivity` (valueQuantity), or `referenceRange.high` otherwise absent.
- Cells analysed: extension `urn:mrdhub:cells-analysed` or a component coded
  `urn:mrdhub:concept|cells-analysed` (valueInteger or valueQuantity).
- Inadequate specimen: `urn:mrdhub:concept|specimen-inadequate` in Observation.interpretation or
  Specimen.condition.
- Specimen: Observation.specimen -> Specimen.type mapped by the protocol (bone marrow / peripheral blood).
"""

from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from app.domain.mrd import Comparator, MrdMeasurement, is_usable_status
from app.domain.protocol import Assay, Protocol
from app.domain.record import (
    AdverseEventFact,
    ConditionFact,
    ConsentFact,
    CostFact,
    EnrolmentFact,
    ExposureFact,
    MrdResultFact,
    ObservationFact,
    PatientRecord,
)
from app.domain.timepoints import (
    AnchorCandidate,
    AnchorSourceKind,
    ClinicalDate,
    ClinicalTimeError,
    MrdSample,
)

Resource = dict[str, Any]
SENSITIVITY_EXTENSION = "urn:mrdhub:mrd-sensitivity"
CELLS_EXTENSION = "urn:mrdhub:cells-analysed"
MARKER_SYSTEM = "urn:mrdhub:concept"
TRIAL_ANCHOR_CODE = "trial-anchor"
ANCHOR_NAME_EXTENSION = "urn:mrdhub:anchor-name"
ANCHOR_DATE_EXTENSION = "urn:mrdhub:anchor-date"
ANCHOR_REASON_EXTENSION = "urn:mrdhub:anchor-reason"


def versioned(resource: Resource) -> str:
    version = (resource.get("meta") or {}).get("versionId", "1")
    return f"{resource['resourceType']}/{resource['id']}/_history/{version}"


def codings(element: Any) -> list[tuple[str, str]]:
    """(system, code) pairs of a CodeableConcept, a Coding, or a list of either."""
    found: list[tuple[str, str]] = []
    for item in element if isinstance(element, list) else [element]:
        if not isinstance(item, dict):
            continue
        for coding in item.get("coding", [item]) if "coding" in item else [item]:
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                found.append((str(coding.get("system") or ""), coding["code"]))
    return found


def concepts_of(protocol: Protocol, *elements: Any) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for element in elements:
        for system, code in codings(element):
            concept = protocol.codes.concept_for(system, code)
            if concept is not None:
                found[concept] = None
    return tuple(found)


def unmapped_codes(protocol: Protocol, element: Any) -> list[tuple[str, str]]:
    """The codings of an element when none of them maps to a trial concept."""
    pairs = codings(element)
    if any(protocol.codes.concept_for(s, c) is not None for s, c in pairs):
        return []
    return pairs


def clinical_date(value: Any) -> ClinicalDate | None:
    if isinstance(value, dict):
        value = value.get("start")
    if not isinstance(value, str):
        return None
    try:
        return ClinicalDate.parse(value)
    except ClinicalTimeError:
        return None


def _first_date(resource: Resource, *keys: str) -> ClinicalDate | None:
    for key in keys:
        found = clinical_date(resource.get(key))
        if found is not None:
            return found
    return None


def _period_end(resource: Resource, key: str) -> ClinicalDate | None:
    period = resource.get(key)
    if isinstance(period, dict) and isinstance(period.get("end"), str):
        return clinical_date(period["end"])
    if isinstance(period, str):
        return clinical_date(period)
    return None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def assay_of(protocol: Protocol, observation: Resource) -> Assay | None:
    concepts = concepts_of(protocol, observation.get("code"))
    for rule in protocol.assays.values():
        if rule.concept in concepts:
            return rule.assay
    return None


def mrd_measurement(
    protocol: Protocol, observation: Resource, assay: Assay, specimen: Resource | None
) -> MrdMeasurement:
    concept = protocol.assays[assay].concept
    quantity = observation.get("valueQuantity") or {}
    value = _decimal(quantity.get("value"))
    unit = quantity.get("code") or quantity.get("unit")
    comparator = quantity.get("comparator")
    not_detected = any(
        protocol.codes.value_for(concept=concept, system=s, code=c) == "not-detected"
        for s, c in codings(observation.get("valueCodeableConcept"))
        + codings(observation.get("interpretation"))
    )
    sensitivity = _component_or_extension(observation, SENSITIVITY_EXTENSION, "mrd-sensitivity")
    if sensitivity is None:
        high = next((r.get("high") for r in observation.get("referenceRange", []) if r.get("high")), None)
        sensitivity = high
    cells = _component_or_extension(observation, CELLS_EXTENSION, "cells-analysed")
    markers = codings(observation.get("interpretation"))
    if specimen is not None:
        markers += codings(specimen.get("condition"))
    return MrdMeasurement(
        assay=assay,
        value=value,
        unit=unit if isinstance(unit, str) else None,
        comparator=Comparator(comparator) if comparator in {c.value for c in Comparator} else None,
        not_detected=not_detected,
        sensitivity_value=_decimal(sensitivity.get("value")) if isinstance(sensitivity, dict) else None,
        sensitivity_unit=(sensitivity.get("code") or sensitivity.get("unit"))
        if isinstance(sensitivity, dict)
        else None,
        cells_analysed=_cells(cells),
        specimen_inadequate=(MARKER_SYSTEM, "specimen-inadequate") in markers,
        value_as_sent=_as_sent(observation),
        reference=versioned(observation),
    )


def _component_or_extension(observation: Resource, extension_url: str, component_code: str) -> Any:
    for extension in observation.get("extension", []):
        if extension.get("url") == extension_url:
            return extension.get("valueQuantity", extension.get("valueInteger"))
    for component in observation.get("component", []):
        if (MARKER_SYSTEM, component_code) in codings(component.get("code")):
            return component.get("valueQuantity", component.get("valueInteger"))
    return None


def _cells(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict):
        number = _decimal(value.get("value"))
        return int(number) if number is not None and number == number.to_integral_value() else None
    return None


def _as_sent(observation: Resource) -> str:
    quantity = observation.get("valueQuantity")
    if isinstance(quantity, dict):
        unit = quantity.get("unit") or quantity.get("code") or ""
        return f"{quantity.get('comparator', '')}{quantity.get('value')} {unit}".strip()
    concept = observation.get("valueCodeableConcept")
    if isinstance(concept, dict):
        return str(concept.get("text") or ", ".join(f"{s}|{c}" for s, c in codings(concept)))
    return "no value"


def patient_record(
    *,
    protocol: Protocol,
    patient: Resource,
    resources: Iterable[Resource],
    organizations: Mapping[str, Resource],
    studies: frozenset[str],
) -> PatientRecord:
    """`organizations` by "Organization/id"; `studies`: "ResearchStudy/id" of this trial's study."""
    site = _site(protocol, patient, organizations)
    zone = (
        protocol.sites[site].zone
        if site is not None and site in protocol.sites
        else next(iter(protocol.sites.values())).zone
    )
    by_type: dict[str, list[Resource]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    specimens = {f"Specimen/{s['id']}": s for s in by_type.get("Specimen", [])}
    mrd: list[MrdResultFact] = []
    unused: list[str] = []
    observations: list[ObservationFact] = []
    for observation in by_type.get("Observation", []):
        assay = assay_of(protocol, observation)
        if assay is None:
            observations.extend(_observation_facts(protocol, observation))
        elif not is_usable_status(observation.get("status", ""), usable=protocol.results.usable_statuses):
            unused.append(versioned(observation))
        else:
            mrd.append(_mrd_fact(protocol, observation, assay, specimens))
    return PatientRecord(
        reference=versioned(patient),
        site=site,
        zone=zone,
        birth_date=clinical_date(patient.get("birthDate")),
        deceased=clinical_date(patient.get("deceasedDateTime")),
        conditions=tuple(c for r in by_type.get("Condition", []) for c in _condition_facts(protocol, r)),
        observations=tuple(observations),
        exposures=tuple(
            e
            for kind in ("MedicationAdministration", "MedicationStatement", "Procedure")
            for r in by_type.get(kind, [])
            for e in _exposure_facts(protocol, r)
        ),
        consents=tuple(_consent_fact(protocol, r) for r in by_type.get("Consent", [])),
        mrd_results=tuple(mrd),
        enrolments=tuple(
            _enrolment(r)
            for r in by_type.get("ResearchSubject", [])
            if (r.get("study") or {}).get("reference") in studies
        ),
        adverse_events=tuple(_adverse_event(protocol, r) for r in by_type.get("AdverseEvent", [])),
        costs=tuple(_cost(r) for r in by_type.get("ChargeItem", []) if r.get("status") != "entered-in-error"),
        manual_anchors=tuple(a for r in by_type.get("Basic", []) for a in _manual_anchor(r)),
        unused_mrd=tuple(unused),
    )


def _site(protocol: Protocol, patient: Resource, organizations: Mapping[str, Resource]) -> str | None:
    reference = (patient.get("managingOrganization") or {}).get("reference")
    organization = organizations.get(reference or "")
    if organization is None:
        return None
    for identifier in organization.get("identifier", []):
        if identifier.get("system") == protocol.study.site_identifier_system:
            return str(identifier.get("value"))
    return None


def _mrd_fact(
    protocol: Protocol, observation: Resource, assay: Assay, specimens: Mapping[str, Resource]
) -> MrdResultFact:
    specimen_ref = (observation.get("specimen") or {}).get("reference", "")
    specimen = specimens.get(specimen_ref.split("/_history/")[0])
    specimen_concepts = concepts_of(protocol, specimen.get("type")) if specimen else ()
    collected = _first_date(observation, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
    if collected is None and specimen is not None:
        collected = clinical_date((specimen.get("collection") or {}).get("collectedDateTime"))
    sample = MrdSample(
        reference=versioned(observation),
        assay=assay,
        collected=collected or ClinicalDate.of_year(1),
        specimen=specimen_concepts[0] if specimen_concepts else None,
    )
    return MrdResultFact(
        mrd_measurement(protocol, observation, assay, specimen), sample, observation["status"]
    )


def _observation_facts(protocol: Protocol, observation: Resource) -> list[ObservationFact]:
    if observation.get("status") in ("entered-in-error", "cancelled", "preliminary", "registered"):
        return []
    facts = []
    value = observation.get("valueCodeableConcept")
    for concept in concepts_of(protocol, observation.get("code")):
        mapped = next(
            (
                v
                for s, c in codings(value)
                if (v := protocol.codes.value_for(concept=concept, system=s, code=c))
            ),
            None,
        )
        sent = ", ".join(c for _, c in codings(value)) or str((value or {}).get("text") or "no value")
        facts.append(
            ObservationFact(
                concept,
                mapped,
                sent,
                _first_date(observation, "effectiveDateTime", "effectivePeriod", "issued"),
                versioned(observation),
            )
        )
    return facts


def _condition_facts(protocol: Protocol, condition: Resource) -> list[ConditionFact]:
    status = {c for _, c in codings(condition.get("verificationStatus"))}
    onset = _first_date(condition, "onsetDateTime", "onsetPeriod", "recordedDate")
    return [
        ConditionFact(
            concept,
            onset,
            confirmed=not status or "confirmed" in status,
            refuted=bool(status & {"refuted", "entered-in-error"}),
            reference=versioned(condition),
        )
        for concept in concepts_of(protocol, condition.get("code"))
    ]


def _exposure_facts(protocol: Protocol, resource: Resource) -> list[ExposureFact]:
    if resource.get("status") in ("entered-in-error", "not-done", "not-taken", "cancelled"):
        return []
    if resource["resourceType"] == "Procedure":
        concepts = concepts_of(protocol, resource.get("code"), resource.get("category"))
        start = _first_date(resource, "performedDateTime", "performedPeriod")
        end = _period_end(resource, "performedPeriod") or (clinical_date(resource.get("performedDateTime")))
    else:
        concepts = concepts_of(protocol, resource.get("medicationCodeableConcept"), resource.get("category"))
        start = _first_date(resource, "effectiveDateTime", "effectivePeriod")
        end = _period_end(resource, "effectivePeriod") or clinical_date(resource.get("effectiveDateTime"))
    ongoing = resource.get("status") in ("in-progress", "active", "on-hold")
    return [
        ExposureFact(concept, start, None if ongoing else end, ongoing, versioned(resource), concepts)
        for concept in concepts
    ]


def _consent_fact(protocol: Protocol, consent: Resource) -> ConsentFact:
    return ConsentFact(
        concepts_of(protocol, consent.get("category"), consent.get("scope")),
        str(consent.get("status")),
        clinical_date(consent.get("dateTime")),
        versioned(consent),
    )


def _enrolment(subject: Resource) -> EnrolmentFact:
    period = subject.get("period") or {}
    return EnrolmentFact(
        arm=subject.get("assignedArm"),
        start=clinical_date(period.get("start")),
        end=clinical_date(period.get("end")),
        status=str(subject.get("status")),
        reference=versioned(subject),
    )


def _adverse_event(protocol: Protocol, event: Resource) -> AdverseEventFact:
    code = event.get("event") or {}
    term = code.get("text") or next(
        (c.get("display") or c.get("code") for c in code.get("coding", []) if isinstance(c, dict)),
        "unspecified",
    )
    grade = next(
        (
            x.get("valueInteger")
            for x in event.get("extension", [])
            if x.get("url") == protocol.adverse_events.grade_extension
        ),
        None,
    )
    return AdverseEventFact(str(term), grade, _first_date(event, "date", "detected"), versioned(event))


def _cost(charge: Resource) -> CostFact:
    money = charge.get("priceOverride") or {}
    return CostFact(
        _decimal(money.get("value")),
        money.get("currency"),
        _first_date(charge, "occurrenceDateTime", "occurrencePeriod", "enteredDate"),
        versioned(charge),
    )


def _manual_anchor(basic: Resource) -> list[AnchorCandidate]:
    """A trial-office anchor, stored as a FHIR Basic resource so it is versioned and audited like data."""
    if (MARKER_SYSTEM, TRIAL_ANCHOR_CODE) not in codings(basic.get("code")):
        return []
    values = {x.get("url"): x for x in basic.get("extension", [])}
    name = (values.get(ANCHOR_NAME_EXTENSION) or {}).get("valueCode")
    day = clinical_date((values.get(ANCHOR_DATE_EXTENSION) or {}).get("valueDate"))
    if not name or day is None or day.day_in("UTC") is None:
        return []
    date = day.day_in("UTC")
    assert date is not None
    return [AnchorCandidate(str(name), date, AnchorSourceKind.TRIAL_OFFICE, versioned(basic))]
