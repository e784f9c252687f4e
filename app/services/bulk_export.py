"""FHIR Bulk Data export (Bulk Data Access IG 2.0, `$export`): what is exported, and the NDJSON itself.

A consistent snapshot without copying data: the export's `transactionTime` is fixed at kick-off, and
each resource is exported as the version that was current then (the newest of its `resource_versions`
recorded on or before it; one deleted then is left out). Later writes do not change an export's files,
which are read from the store when they are downloaded, in pages by primary key, each page its own short
read transaction, so a download of any size keeps memory flat. `_since` keeps the resources whose
exported version was recorded after it.

Who sees what matches search: a site's client exports its own patients and their data plus the
resources about no patient (Organization, ResearchStudy); the audit trail (AuditEvent, Provenance) is
exported only to the trial office, and only when asked for by `_type`, so that an export imported
elsewhere does not carry this server's trail. A Patient-level export (`/fhir/Patient/$export`) keeps
the Patients and the resources linked to a patient.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.db.engine import Database, current_deadline
from app.db.sites import PATIENT_LINKS, visible
from app.db.tables import ResourceRow, ResourceVersionRow, SearchIndexRow
from app.domain.access import TRAIL_TYPES, Permission, Principal
from app.fhir.dates import to_utc_naive
from app.fhir.outcome import FhirError, Issue, error
from app.fhir.resources import is_resource_type
from app.fhir.search_params import PARAMS

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = (NDJSON, "application/ndjson", "ndjson")
PAGE = 1000
KNOWN_PARAMETERS = ("_outputFormat", "_type", "_since")
# Types first that others refer to, so that the files imported in manifest order rarely wait for a
# reference (app/services/bulk_import.py puts such lines aside and retries them anyway).
ORDER = (
    "Organization",
    "Practitioner",
    "Location",
    "ResearchStudy",
    "Patient",
    "Consent",
    "ResearchSubject",
    "Encounter",
    "Condition",
    "Specimen",
    "Observation",
    "DiagnosticReport",
    "Medication",
    "MedicationAdministration",
    "MedicationStatement",
    "Procedure",
    "AdverseEvent",
    "ChargeItem",
)


@dataclass(frozen=True)
class ExportRequest:
    """A validated kick-off: the types asked for (None: all the client may read), `_since`, the level."""

    types: tuple[str, ...] | None
    since: datetime | None  # naive UTC
    patient_level: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "types": list(self.types) if self.types is not None else None,
            "since": self.since.isoformat() if self.since else None,
            "patient_level": self.patient_level,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ExportRequest":
        since = data.get("since")
        return cls(
            tuple(data["types"]) if data.get("types") is not None else None,
            datetime.fromisoformat(since) if since else None,
            bool(data.get("patient_level")),
        )


def parse_kickoff(
    params: list[tuple[str, str]], *, principal: Principal, patient_level: bool, lenient: bool
) -> ExportRequest:
    """The kick-off's parameters, or a 400/403 OperationOutcome naming the one at fault."""
    names = {name for name, _ in params}
    for name in sorted(names - set(KNOWN_PARAMETERS)):
        if not lenient:
            raise error(400, "not-supported", f"Parameter {name} is not supported by this server", name)
    values = {name: value for name, value in params}
    output_format = values.get("_outputFormat")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        raise error(
            400,
            "not-supported",
            f"_outputFormat '{output_format}' is not supported; use {NDJSON}",
            "_outputFormat",
        )
    types: tuple[str, ...] | None = None
    if "_type" in values:
        listed = [t.strip() for _, v in params if _ == "_type" for t in v.split(",") if t.strip()]
        unknown = [t for t in listed if not is_resource_type(t)]
        if unknown or not listed:
            raise error(400, "not-supported", f"_type names no known resource type: {unknown or ''}", "_type")
        for resource_type in listed:
            if not principal.may(resource_type, Permission.READ):
                raise FhirError(
                    403,
                    [Issue("error", "forbidden", f"Scope system/{resource_type}.r is required", ("_type",))],
                )
        types = tuple(dict.fromkeys(listed))
    since = None
    if "_since" in values:
        try:
            moment = datetime.fromisoformat(values["_since"].replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise error(
                400,
                "value",
                f"_since must be a FHIR instant with a time zone, not '{values['_since']}'",
                "_since",
            )
        since = to_utc_naive(moment)
    return ExportRequest(types, since, patient_level)


def _snapshot(resource_type: str, at: datetime) -> Any:
    """The version of each resource of the type that was current at `at`."""
    newest = (
        select(func.max(ResourceVersionRow.version_id))
        .where(ResourceVersionRow.resource_pk == ResourceRow.pk, ResourceVersionRow.last_updated <= at)
        .correlate(ResourceRow)
        .scalar_subquery()
    )
    return (
        select(ResourceRow.pk, ResourceVersionRow.content)
        .join(ResourceVersionRow, ResourceVersionRow.resource_pk == ResourceRow.pk)
        .where(
            ResourceRow.resource_type == resource_type,
            ResourceVersionRow.version_id == newest,
            ResourceVersionRow.deleted.is_(False),
        )
    )


def _conditions(request: ExportRequest, resource_type: str, site: str | None) -> list[ColumnElement[bool]]:
    found = [visible(resource_type, site)]
    if request.since is not None:
        found.append(ResourceVersionRow.last_updated > request.since)
    if request.patient_level and resource_type != "Patient":
        linked = select(SearchIndexRow.resource_pk).where(
            SearchIndexRow.resource_type == resource_type, SearchIndexRow.param.in_(PATIENT_LINKS)
        )
        found.append(ResourceRow.pk.in_(linked))
    return found


def exported_types(session: Session, request: ExportRequest, principal: Principal) -> list[str]:
    """The types to export, in ORDER (types that others refer to first), then by name."""
    if request.types is not None:
        wanted = list(request.types)
    else:
        present = session.scalars(select(ResourceRow.resource_type).distinct())
        wanted = [t for t in present if t not in TRAIL_TYPES and principal.may(t, Permission.READ)]
    if request.patient_level:
        wanted = [t for t in wanted if t == "Patient" or t in _patient_linked() or t in TRAIL_TYPES]
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(set(wanted), key=lambda t: (rank.get(t, len(ORDER)), t))


@cache
def _patient_linked() -> frozenset[str]:
    """Types with a search parameter that links them to a patient (the Patient compartment, as indexed)."""
    return frozenset(t for t, params in PARAMS.items() if any(p.name in PATIENT_LINKS for p in params))


def count(
    session: Session, request: ExportRequest, resource_type: str, *, site: str | None, at: datetime
) -> int:
    query = _snapshot(resource_type, at).where(*_conditions(request, resource_type, site))
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def lines(
    db: Database, request: ExportRequest, resource_type: str, *, site: str | None, at: datetime
) -> Iterator[bytes]:
    """The type's NDJSON, a page at a time; each page is read in its own short transaction.

    A download may outlast the request time limit: the pages are read without the request's deadline
    (the limit is for answering, and the answer is already under way).
    """
    query = _snapshot(resource_type, at).where(*_conditions(request, resource_type, site))
    after = 0
    while True:
        token = current_deadline.set(None)
        try:
            with db.read() as session:
                rows = session.execute(
                    query.where(ResourceRow.pk > after).order_by(ResourceRow.pk).limit(PAGE)
                ).all()
        finally:
            current_deadline.reset(token)
        if not rows:
            return
        after = rows[-1][0]
        yield b"".join(content.encode() + b"\n" for _, content in rows)


class Cancelled(Exception):
    """The export was deleted while it ran."""


def plan(
    db: Database,
    request: ExportRequest,
    principal: Principal,
    *,
    at: datetime,
    on_progress: Callable[[int, int], bool] | None = None,
) -> list[dict[str, Any]]:
    """The manifest's outputs: each type with something to export, and how many resources, in one
    snapshot. `on_progress(types done, types)` returning False stops it (Cancelled)."""
    outputs: list[dict[str, Any]] = []
    with db.read() as session:
        types = exported_types(session, request, principal)
        for done, resource_type in enumerate(types, start=1):
            n = count(session, request, resource_type, site=principal.site, at=at)
            if n:
                outputs.append({"type": resource_type, "count": n})
            if on_progress is not None and not on_progress(done, len(types)):
                raise Cancelled
    return outputs
