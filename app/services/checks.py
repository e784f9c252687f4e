"""Protocol-aware checks of incoming resources, run inside ingest before anything is written.

An MRD result whose unit cannot be converted is rejected (it would be stored as garbage); a code that no
trial concept maps is accepted with a warning, and listed by the unmapped-codes report (PROTOCOL.md 3).
"""

from typing import Any

from app.domain.protocol import Protocol
from app.fhir.extract import assay_of, unmapped_codes
from app.fhir.outcome import Issue, error
from app.services.writes import ResourceCheck

# Where each resource type carries the code that the trial's logic reads.
CODED_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Observation": ("code",),
    "Condition": ("code",),
    "Specimen": ("type",),
    "MedicationAdministration": ("medicationCodeableConcept", "category"),
    "MedicationStatement": ("medicationCodeableConcept", "category"),
    "Procedure": ("code",),
}


def protocol_checks(protocol: Protocol) -> tuple[ResourceCheck, ...]:
    def mrd_units(resource: dict[str, Any]) -> list[Issue]:
        if resource.get("resourceType") != "Observation" or resource.get("status") == "entered-in-error":
            return []
        assay = assay_of(protocol, resource)
        quantity = resource.get("valueQuantity")
        if assay is None or not isinstance(quantity, dict) or "value" not in quantity:
            return []
        unit = quantity.get("code")
        factors = protocol.assays[assay].unit_factors
        if unit not in factors:
            accepted = ", ".join(sorted(factors))
            where = "Observation.valueQuantity.code"
            raise error(
                400,
                "value",
                f"MRD unit {unit!r} cannot be converted to a fraction (accepted UCUM: {accepted})",
                where,
            )
        return []

    def unmapped(resource: dict[str, Any]) -> list[Issue]:
        resource_type = str(resource.get("resourceType"))
        elements = CODED_ELEMENTS.get(resource_type, ())
        if not elements or resource.get("status") == "entered-in-error":
            return []
        pairs = [p for e in elements for p in unmapped_codes(protocol, resource.get(e))]
        mapped_any = any(resource.get(e) and not unmapped_codes(protocol, resource.get(e)) for e in elements)
        if mapped_any or not pairs:
            return []
        codes = ", ".join(f"{s}|{c}" for s, c in pairs)
        return [
            Issue(
                "warning",
                "code-invalid",
                f"No trial concept maps {codes}: stored, not used by the trial logic",
                (f"{resource_type}.{elements[0]}",),
            )
        ]

    return (mrd_units, unmapped)
