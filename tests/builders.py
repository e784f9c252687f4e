"""Small builders of FHIR R4 resources and bundles, shaped like what a hospital LIS sends."""

import copy
import uuid
from typing import Any

CONCEPT = "urn:mrdhub:concept"
UCUM = "http://unitsofmeasure.org"
PATIENT_SYSTEM = "urn:oid:2.16.840.1.113883.2.4.6.3.test"
LAB_SYSTEM = "urn:mrdhub:test:lab-result"


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def patient(mrn: str, *, birth_date: str = "2018-04-01", organization: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": PATIENT_SYSTEM, "value": mrn}],
        "name": [{"family": "Test", "given": ["Child"]}],
        "gender": "female",
        "birthDate": birth_date,
    }
    if organization:
        resource["managingOrganization"] = {"reference": organization}
    return resource


def mrd(
    accession: str,
    subject: str,
    *,
    value: float = 0.05,
    unit: str = "%",
    assay: str = "mrd-flow",
    status: str = "final",
    effective: str = "2025-03-19T09:30:00+08:00",
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": LAB_SYSTEM, "value": accession}],
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": CONCEPT, "code": assay}]},
        "subject": {"reference": subject},
        "effectiveDateTime": effective,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def post(
    resource: dict[str, Any], full_url: str | None = None, if_none_exist: str | None = None
) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    entry: dict[str, Any] = {"resource": resource, "request": request}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put(resource: dict[str, Any], url: str) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "PUT", "url": url}}


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [copy.deepcopy(e) for e in entries]}


def lab_report(mrn: str, accession: str, **mrd_args: Any) -> dict[str, Any]:
    """A typical LIS push: the patient (conditional on the MRN) and one MRD result referring to it."""
    p = urn()
    return bundle(
        post(patient(mrn), p, if_none_exist=f"identifier={PATIENT_SYSTEM}|{mrn}"),
        post(mrd(accession, p, **mrd_args)),
    )
