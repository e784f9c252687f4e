"""The screening log (issue 5): each decision stored with the evaluation it was based on, and the patient's
ResearchSubject created or updated through the same FHIR store, in one transaction."""

import datetime as dt
import json
from typing import Any

from app.db import patients as store
from app.db.engine import Database
from app.db.sites import current_site
from app.domain.protocol import Protocol
from app.fhir.bundle import Entry
from app.fhir.extract import MARKER_SYSTEM, versioned
from app.services.eligibility import evaluate, render
from app.services.errors import InvalidInput
from app.services.ingest import in_transaction, now_ms
from app.services.patients import load_record
from app.services.writes import Run, apply_entries

SCREENING_CODE = "screening-decision"
SUBJECT_SYSTEM = "urn:mrdhub:research-subject"
DECISION_EXTENSION = "urn:mrdhub:screening"
STATUS_FOR_OVERALL = {"eligible": "eligible", "ineligible": "ineligible", "incomplete": "candidate"}


def record_decision(
    db: Database,
    protocol: Protocol,
    *,
    patient: str,
    as_of: dt.date | None,
    decision: str,
    reason: str,
    override_reason: str | None,
    retries: int,
) -> dict[str, Any]:
    with db.read() as session:
        record = load_record(session, protocol, patient)
    answer = evaluate(protocol, record, as_of)
    snapshot = render(answer, record)
    if decision == "enrol" and answer.overall.value != "eligible" and not override_reason:
        raise InvalidInput(
            f"The patient is {answer.overall.value} as of {answer.as_of}: enrolling needs an override_reason",
            parameter="override_reason",
        )
    patient_ref = record.reference.split("/_history/")[0]
    patient_id = patient_ref.split("/")[1]
    status = "on-study" if decision == "enrol" else STATUS_FOR_OVERALL[answer.overall.value]
    decided_at = now_ms()

    def write(session: Any) -> dict[str, Any]:
        run = Run(session, now_ms())
        study = {
            "resourceType": "ResearchStudy",
            "identifier": [{"system": protocol.study.identifier_system, "value": protocol.study.identifier}],
            "title": protocol.study.title,
            "status": "active",
        }
        condition = f"identifier={protocol.study.identifier_system}|{protocol.study.identifier}"
        study_outcome = apply_entries(
            run, [Entry(0, "POST", "ResearchStudy", resource=study, if_none_exist=condition)]
        )[0]
        study_ref = (study_outcome.location or "").split("/_history/")[0]
        subject: dict[str, Any] = {
            "resourceType": "ResearchSubject",
            "identifier": [{"system": SUBJECT_SYSTEM, "value": f"{protocol.study.slug}:{patient_id}"}],
            "status": status,
            "study": {"reference": study_ref},
            "individual": {"reference": patient_ref},
        }
        if decision == "enrol":
            subject["assignedArm"] = protocol.study.arms[0]
            subject["period"] = {"start": answer.as_of.isoformat()}
        log = {
            "resourceType": "Basic",
            "code": {"coding": [{"system": MARKER_SYSTEM, "code": SCREENING_CODE}]},
            "subject": {"reference": patient_ref},
            "created": answer.as_of.isoformat(),
            "extension": [
                {"url": f"{DECISION_EXTENSION}-decision", "valueCode": decision},
                {"url": f"{DECISION_EXTENSION}-reason", "valueString": reason},
                {"url": f"{DECISION_EXTENSION}-override", "valueString": override_reason or ""},
                {"url": f"{DECISION_EXTENSION}-decided-at", "valueInstant": decided_at.isoformat() + "Z"},
                {
                    "url": f"{DECISION_EXTENSION}-snapshot",
                    "valueString": json.dumps(snapshot, sort_keys=True),
                },
            ],
        }
        query = [("patient", patient_ref), ("study", study_ref)]
        subject_outcome, log_outcome = apply_entries(
            run,
            [
                Entry(0, "PUT", "ResearchSubject", query=query, resource=subject),
                Entry(1, "POST", "Basic", resource=log),
            ],
        )
        return {"research_subject": subject_outcome.location, "record": log_outcome.location}

    written = in_transaction(db, write, retries=retries)
    return {"decision": decision, "status": status, **written, "evaluation": snapshot}


def screening_log(
    db: Database,
    protocol: Protocol,
    *,
    site: str | None,
    since: dt.date | None,
    until: dt.date | None,
    recorded_by: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Screening decisions dated `since`..`until`; with `recorded_by` (naive UTC), as they were recorded
    then, so a data cut-off is not changed by decisions entered (or back-dated) afterwards."""
    scope = current_site.get()
    if scope is not None:
        site = scope  # a site's client sees its own decisions only
    with db.read() as session:
        stored = (
            store.current_of_type(session, "Basic")
            if recorded_by is None
            else store.of_type_recorded_by(session, "Basic", recorded_by)
        )
        records = [
            r
            for r in stored
            if (MARKER_SYSTEM, SCREENING_CODE)
            in {(c.get("system"), c.get("code")) for c in r["code"].get("coding", [])}
        ]
    rows = []
    for basic in records:
        values = {
            x["url"].removeprefix(f"{DECISION_EXTENSION}-"): next(
                v for k, v in x.items() if k.startswith("value")
            )
            for x in basic.get("extension", [])
            if x.get("url", "").startswith(DECISION_EXTENSION)
        }
        snapshot = json.loads(values.get("snapshot", "{}"))
        as_of = dt.date.fromisoformat(basic["created"])
        if (site and snapshot.get("site") != site) or (since and as_of < since) or (until and as_of > until):
            continue
        rows.append(
            {
                "patient": basic["subject"]["reference"],
                "site": snapshot.get("site"),
                "as_of": basic["created"],
                "decision": values.get("decision"),
                "overall": snapshot.get("overall"),
                "reason": values.get("reason"),
                "override_reason": values.get("override") or None,
                "decided_at": values.get("decided-at"),
                "record": versioned(basic),
            }
        )
    return sorted(rows, key=lambda r: (r["as_of"], r["decided_at"] or "", r["record"]))
