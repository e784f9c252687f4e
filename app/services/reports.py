"""Data-quality reports for the trial office."""

from typing import Any

from app.db.engine import Database
from app.db.patients import current_of_type
from app.domain.protocol import Protocol
from app.fhir.extract import unmapped_codes
from app.services.checks import CODED_ELEMENTS


def unmapped_code_report(db: Database, protocol: Protocol) -> dict[str, Any]:
    """Codes that no trial concept maps, with how often and at which sites they arrived."""
    with db.read() as session:
        organizations = {f"Organization/{o['id']}": o for o in current_of_type(session, "Organization")}
        site_of_patient = {
            f"Patient/{p['id']}": _site(
                protocol, organizations.get((p.get("managingOrganization") or {}).get("reference", ""))
            )
            for p in current_of_type(session, "Patient")
        }
        found: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        for resource_type, elements in CODED_ELEMENTS.items():
            for resource in current_of_type(session, resource_type):
                if resource.get("status") == "entered-in-error":
                    continue
                if any(resource.get(e) and not unmapped_codes(protocol, resource.get(e)) for e in elements):
                    continue
                subject = (resource.get("subject") or {}).get("reference", "").split("/_history/")[0]
                for element in elements:
                    for system, code in unmapped_codes(protocol, resource.get(element)):
                        key = (resource_type, element, system, code)
                        entry = found.setdefault(
                            key,
                            {
                                "resource_type": resource_type,
                                "element": element,
                                "system": system,
                                "code": code,
                                "count": 0,
                                "sites": set(),
                            },
                        )
                        entry["count"] += 1
                        site = site_of_patient.get(subject)
                        if site:
                            entry["sites"].add(site)
    codes = [{**v, "sites": sorted(v["sites"])} for _, v in sorted(found.items())]
    return {"protocol_version": protocol.version, "codes": codes}


def _site(protocol: Protocol, organization: dict[str, Any] | None) -> str | None:
    for identifier in (organization or {}).get("identifier", []):
        if identifier.get("system") == protocol.study.site_identifier_system:
            return str(identifier.get("value"))
    return None
