"""Writes demo/bundles/*.json: LIS-style transaction bundles for a few patients at each of the four sites.

Run `python demo/generate.py` after changing it; the JSON files are committed so `make run` needs no
generator. Values are illustrative, not patient data. Codes are the trial's `urn:mrdhub:concept` codes and
the SNOMED CT specimen codes of PROTOCOL.md section 7.
"""

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

CONCEPT = "urn:mrdhub:concept"
SITE = "urn:mrdhub:site"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
SITES = {
    "HEFEI-APCH": "Anhui Provincial Children's Hospital",
    "FUZHOU-FCH": "Fujian Children's Hospital",
    "SHANGHAI-SCMC": "Shanghai Children's Medical Center",
    "NINGBO-NWCH": "Ningbo Women and Children's Hospital",
}
OUT = Path(__file__).parent / "bundles"


def concept(code: str) -> dict[str, Any]:
    return {"coding": [{"system": CONCEPT, "code": code}]}


def entry(resource: dict[str, Any], full_url: str, if_none_exist: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": full_url, "resource": resource, "request": request}


def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def registration(site: str, mrn: str, birth: date, day1: date, risk: str) -> dict[str, Any]:
    system = f"urn:mrdhub:demo:{site.lower()}:mrn"
    org = {
        "resourceType": "Organization",
        "identifier": [{"system": SITE, "value": site}],
        "name": SITES[site],
    }
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": mrn}],
        "gender": "female" if int(mrn[-1]) % 2 else "male",
        "birthDate": birth.isoformat(),
        "managingOrganization": {"reference": "urn:uuid:org"},
    }
    subject = {"reference": "urn:uuid:patient"}
    condition = {
        "resourceType": "Condition",
        "identifier": [{"system": f"{system}:dx", "value": f"{mrn}-DX"}],
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
            ]
        },
        "code": {
            "coding": [
                {"system": "http://hl7.org/fhir/sid/icd-10", "code": "C91.0"},
                {"system": CONCEPT, "code": "all"},
            ]
        },
        "subject": subject,
        "onsetDateTime": (day1 - timedelta(days=2)).isoformat(),
    }
    risk_obs = {
        "resourceType": "Observation",
        "identifier": [{"system": f"{system}:risk", "value": f"{mrn}-RISK"}],
        "status": "final",
        "code": concept("provisional-risk"),
        "subject": subject,
        "effectiveDateTime": f"{day1.isoformat()}T10:00:00+08:00",
        "valueCodeableConcept": concept(risk),
    }
    window = {
        "resourceType": "MedicationAdministration",
        "identifier": [{"system": f"{system}:mar", "value": f"{mrn}-WINDOW"}],
        "status": "completed",
        "category": concept("window-phase"),
        "medicationCodeableConcept": {"text": "dexamethasone (window phase)"},
        "subject": subject,
        "effectivePeriod": {
            "start": f"{day1.isoformat()}T08:00:00+08:00",
            "end": f"{(day1 + timedelta(days=6)).isoformat()}T08:00:00+08:00",
        },
    }
    return bundle(
        entry(org, "urn:uuid:org", f"identifier={SITE}|{site}"),
        entry(patient, "urn:uuid:patient", f"identifier={system}|{mrn}"),
        entry(condition, "urn:uuid:condition"),
        entry(risk_obs, "urn:uuid:risk"),
        entry(window, "urn:uuid:window"),
    )


def mrd_report(site: str, mrn: str, accession: str, taken: date, assay: str, percent: str) -> dict[str, Any]:
    system = f"urn:mrdhub:demo:{site.lower()}:mrn"
    subject = {"reference": f"Patient?identifier={system}|{mrn}"}
    specimen = {
        "resourceType": "Specimen",
        "identifier": [{"system": f"urn:mrdhub:demo:{site.lower()}:specimen", "value": accession}],
        "type": {
            "coding": [
                {
                    "system": SNOMED,
                    "code": "396997002",
                    "display": "Specimen from bone marrow obtained by aspiration",
                }
            ]
        },
        "subject": subject,
        "collection": {"collectedDateTime": f"{taken.isoformat()}T08:30:00+08:00"},
    }
    observation = {
        "resourceType": "Observation",
        "identifier": [{"system": f"urn:mrdhub:demo:{site.lower()}:result", "value": f"{accession}-{assay}"}],
        "status": "final",
        "code": concept(assay),
        "subject": subject,
        "effectiveDateTime": f"{taken.isoformat()}T08:30:00+08:00",
        "valueQuantity": {"value": float(percent), "unit": "%", "system": UCUM, "code": "%"},
        "specimen": {"reference": "urn:uuid:specimen"},
    }
    return bundle(entry(specimen, "urn:uuid:specimen"), entry(observation, "urn:uuid:observation"))


# (site, mrn, birth date, induction day 1, provisional risk, D19 flow MRD %)
PATIENTS = [
    ("HEFEI-APCH", "H0001", date(2016, 5, 12), date(2025, 3, 3), "low", "0.35"),
    ("HEFEI-APCH", "H0002", date(2019, 9, 30), date(2025, 4, 7), "intermediate", "0.02"),
    ("FUZHOU-FCH", "F0001", date(2014, 1, 8), date(2025, 2, 17), "intermediate", "0.80"),
    ("FUZHOU-FCH", "F0002", date(2020, 11, 2), date(2025, 5, 5), "low", "0.05"),
    ("SHANGHAI-SCMC", "S0001", date(2012, 7, 21), date(2025, 3, 10), "low", "1.20"),
    ("SHANGHAI-SCMC", "S0002", date(2017, 2, 28), date(2025, 6, 2), "intermediate", "0.01"),
    ("NINGBO-NWCH", "N0001", date(2015, 12, 1), date(2025, 4, 21), "intermediate", "0.15"),
    ("NINGBO-NWCH", "N0002", date(2021, 3, 14), date(2025, 7, 7), "low", "0.12"),
]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for site, mrn, birth, day1, risk, d19 in PATIENTS:
        files = {
            f"{mrn}-0-registration": registration(site, mrn, birth, day1, risk),
            f"{mrn}-1-d19-flow": mrd_report(
                site, mrn, f"{mrn}-BM19", day1 + timedelta(days=18), "mrd-flow", d19
            ),
        }
        for name, content in files.items():
            (OUT / f"{name}.json").write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
