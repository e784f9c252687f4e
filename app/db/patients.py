"""Reading everything stored about one patient, as it is now or as it was recorded by a cut-off."""

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from app.db.repository import loads
from app.db.sites import visible
from app.db.tables import IdentifierRow, ResourceRow, ResourceVersionRow, SearchIndexRow

# Search parameters that point from a resource to its patient (see app/fhir/search_params.py).
PATIENT_PARAMS = ("patient", "subject", "individual")
# The audit trail is about patients but is not part of their clinical record.
TRAIL_TYPES = ("AuditEvent", "Provenance")
IN_SLICE = 1000  # patients per statement when reading many records
PK_SLICE = 10_000  # resources per statement


def find_patient(session: Session, key: str) -> ResourceRow | None:
    """By server id, or by `identifier=system|value` / `system|value`."""
    if "|" in key:
        system, _, value = key.removeprefix("identifier=").partition("|")
        return session.scalars(
            select(ResourceRow)
            .join(IdentifierRow, IdentifierRow.resource_pk == ResourceRow.pk)
            .where(
                IdentifierRow.resource_type == "Patient",
                IdentifierRow.system == system,
                IdentifierRow.value == value,
                ResourceRow.deleted.is_(False),
                visible("Patient"),
            )
        ).first()
    row = session.scalars(
        select(ResourceRow).where(
            ResourceRow.resource_type == "Patient", ResourceRow.logical_id == key, visible("Patient")
        )
    ).one_or_none()
    return row if row is not None and not row.deleted and row.version_id > 0 else None


def patient_ids(session: Session) -> list[str]:
    return [
        str(i)
        for i in session.scalars(
            select(ResourceRow.logical_id)
            .where(ResourceRow.resource_type == "Patient", ResourceRow.deleted.is_(False), visible("Patient"))
            .order_by(ResourceRow.pk)
        )
    ]


def related_resources(
    session: Session, patient_ids: list[str], *, recorded_by: datetime | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each patient's resources (the patient included), by "Patient/id".

    With `recorded_by`, each resource is the version that was current at that moment (meta.lastUpdated
    on or before it), so a later correction does not change an earlier cut-off's answer.
    """
    found: dict[str, list[dict[str, Any]]] = {f"Patient/{i}": [] for i in patient_ids}
    # In slices: PostgreSQL takes at most 65,535 parameters in a statement, and a registry has more patients.
    for start in range(0, len(patient_ids), IN_SLICE):
        ids = patient_ids[start : start + IN_SLICE]
        owners = _owners(session, ids)
        for pk, content in _contents(session, list(owners), recorded_by):
            found[owners[pk]].append(content)
    return found


def _owners(session: Session, patient_ids: list[str]) -> dict[int, str]:
    """Which patient each resource belongs to: resource pk -> "Patient/id"."""
    references = [f"Patient/{i}" for i in patient_ids]
    links = session.execute(
        select(SearchIndexRow.resource_pk, SearchIndexRow.value)
        .where(
            SearchIndexRow.value.in_(references),
            SearchIndexRow.param.in_(PATIENT_PARAMS),
            SearchIndexRow.resource_type.not_in(TRAIL_TYPES),
        )
        .distinct()
    ).all()
    owners: dict[int, str] = {pk: str(value) for pk, value in links}
    patients = session.execute(
        select(ResourceRow.pk, ResourceRow.logical_id).where(
            ResourceRow.resource_type == "Patient", ResourceRow.logical_id.in_(patient_ids)
        )
    ).all()
    owners.update({pk: f"Patient/{logical_id}" for pk, logical_id in patients})
    return owners


def _contents(
    session: Session, pks: list[int], recorded_by: datetime | None
) -> list[tuple[int, dict[str, Any]]]:
    found: list[tuple[int, dict[str, Any]]] = []
    for start in range(0, len(pks), PK_SLICE):
        found.extend(_contents_of(session, pks[start : start + PK_SLICE], recorded_by))
    return found


def _contents_of(
    session: Session, pks: list[int], recorded_by: datetime | None
) -> list[tuple[int, dict[str, Any]]]:
    if recorded_by is None:
        rows = session.execute(
            select(ResourceRow.pk, ResourceRow.content)
            .where(ResourceRow.pk.in_(pks), ResourceRow.deleted.is_(False), ResourceRow.version_id > 0)
            .order_by(ResourceRow.pk)
        ).all()
        return [(pk, loads(content)) for pk, content in rows]
    latest = (
        select(ResourceVersionRow.resource_pk, func.max(ResourceVersionRow.version_id).label("v"))
        .where(ResourceVersionRow.resource_pk.in_(pks), ResourceVersionRow.last_updated <= recorded_by)
        .group_by(ResourceVersionRow.resource_pk)
        .subquery()
    )
    rows = session.execute(
        select(ResourceVersionRow.resource_pk, ResourceVersionRow.content)
        .join(
            latest,
            and_(
                latest.c.resource_pk == ResourceVersionRow.resource_pk,
                latest.c.v == ResourceVersionRow.version_id,
            ),
        )
        .where(ResourceVersionRow.deleted.is_(False))
        .order_by(ResourceVersionRow.resource_pk)
    ).all()
    return [(pk, loads(content)) for pk, content in rows]


def resources_by_identifier(
    session: Session, resource_type: str, system: str, value: str
) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ResourceRow.content)
        .join(IdentifierRow, IdentifierRow.resource_pk == ResourceRow.pk)
        .where(
            IdentifierRow.resource_type == resource_type,
            IdentifierRow.system == system,
            IdentifierRow.value == value,
            ResourceRow.deleted.is_(False),
        )
    )
    return [loads(c) for c in rows]


def of_type_recorded_by(session: Session, resource_type: str, recorded_by: datetime) -> list[dict[str, Any]]:
    """Every resource of a type as it stood at `recorded_by` (those created later, or deleted, left out)."""
    pks = list(
        session.scalars(
            select(ResourceRow.pk).where(ResourceRow.resource_type == resource_type).order_by(ResourceRow.pk)
        )
    )
    return [content for _, content in _contents(session, pks, recorded_by)]


def current_of_type(session: Session, resource_type: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(ResourceRow.content)
        .where(
            ResourceRow.resource_type == resource_type,
            ResourceRow.deleted.is_(False),
            ResourceRow.version_id > 0,
        )
        .order_by(ResourceRow.pk)
    )
    return [loads(c) for c in rows]
