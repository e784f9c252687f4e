"""The CapabilityStatement: exactly the interactions and search parameters this server implements."""

from typing import Any

from app.fhir.search_params import INDEXED_TYPES, SORTS, params_for

SEARCH_TYPES = {"token": "token", "reference": "reference", "date": "date"}
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
PATIENT_EXPORT = {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/patient-export"}


def capability_statement(base: str) -> dict[str, Any]:
    resources = [_resource(t) for t in sorted(INDEXED_TYPES)]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "kind": "instance",
        "software": {"name": "mrdhub", "version": "0.1.0"},
        "implementation": {"description": "mrdhub: MRD data service for trial NCT06607419", "url": base},
        "instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"],
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Every valid R4 resource type can be created, read, updated and deleted; the types "
                    f"listed are also searchable. _sort: {', '.join(SORTS)}. Unknown search parameters "
                    "are an error unless 'Prefer: handling=lenient'."
                ),
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                # FHIR Bulk Data Access (app/api/routes/export.py); Patient-level export is on Patient.
                "operation": [{"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"}],
            }
        ],
    }


def _resource(resource_type: str) -> dict[str, Any]:
    params = [{"name": "_id", "type": "token"}, {"name": "_lastUpdated", "type": "date"}]
    params += [{"name": p.name, "type": SEARCH_TYPES[p.kind]} for p in params_for(resource_type).values()]
    return {
        "type": resource_type,
        "interaction": [
            {"code": c}
            for c in (
                "read",
                "vread",
                "update",
                "delete",
                "history-instance",
                "history-type",
                "create",
                "search-type",
            )
        ],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "searchParam": params,
        **({"operation": [PATIENT_EXPORT]} if resource_type == "Patient" else {}),
    }
