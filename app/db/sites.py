"""Site scoping: a site's client sees and writes only its own patients and their data (issue 7).

The scope of the current request is a context variable set by the authorisation dependency, so every
query that lists or reads patient data (search, read, history, the trial views) applies it without each
route having to remember to. Unset means every site (the trial office, the CLI, the demo loader).
"""

from contextvars import ContextVar
from typing import Any

from sqlalchemy import ColumnElement, Select, literal, or_, select, true
from sqlalchemy.orm import Session

from app.db.tables import IdentifierRow, ResourceRow, SearchIndexRow

SITE_SYSTEM = "urn:mrdhub:site"
PATIENT_LINKS = ("patient", "subject", "individual")
current_site: ContextVar[str | None] = ContextVar("current_site", default=None)


def _site_organizations(site: str) -> Select[Any]:
    return (
        select(literal("Organization/") + ResourceRow.logical_id)
        .join(IdentifierRow, IdentifierRow.resource_pk == ResourceRow.pk)
        .where(
            IdentifierRow.resource_type == "Organization",
            IdentifierRow.system == SITE_SYSTEM,
            IdentifierRow.value == site,
        )
    )


def _site_patient_pks(site: str) -> Select[Any]:
    return select(SearchIndexRow.resource_pk).where(
        SearchIndexRow.resource_type == "Patient",
        SearchIndexRow.param == "organization",
        SearchIndexRow.value.in_(_site_organizations(site)),
    )


def _site_patient_refs(site: str) -> Select[Any]:
    return select(literal("Patient/") + ResourceRow.logical_id).where(
        ResourceRow.pk.in_(_site_patient_pks(site))
    )


def visible(resource_type: str, site: str | None = None) -> ColumnElement[bool]:
    """Condition on ResourceRow: the resource belongs to the site (true when no site scope applies).

    Patients belong to their managing organisation's site; other resources to their patient's site.
    Resources about no patient (Organization, ResearchStudy, ...) are visible to every site.
    """
    site = site if site is not None else current_site.get()
    if site is None:
        return true()
    if resource_type == "Patient":
        return ResourceRow.pk.in_(_site_patient_pks(site))
    linked = select(SearchIndexRow.resource_pk).where(SearchIndexRow.param.in_(PATIENT_LINKS))
    own = select(SearchIndexRow.resource_pk).where(
        SearchIndexRow.param.in_(PATIENT_LINKS), SearchIndexRow.value.in_(_site_patient_refs(site))
    )
    return or_(ResourceRow.pk.in_(own), ResourceRow.pk.not_in(linked))


def can_see(session: Session, resource_type: str, logical_id: str) -> bool:
    """Whether the current site scope may see this resource (True when it does not exist: 404 says so)."""
    if current_site.get() is None:
        return True
    exists = select(ResourceRow.pk).where(
        ResourceRow.resource_type == resource_type, ResourceRow.logical_id == logical_id
    )
    if session.scalar(exists) is None:
        return True
    return session.scalar(exists.where(visible(resource_type))) is not None


def outside_site(session: Session, references: list[str], site: str) -> list[str]:
    """Of the given "Type/id" references, those the site may not see (another site's patient data)."""
    foreign = []
    for reference in references:
        resource_type, _, logical_id = reference.partition("/")
        query = select(ResourceRow.pk).where(
            ResourceRow.resource_type == resource_type, ResourceRow.logical_id == logical_id
        )
        if session.scalar(query.where(visible(resource_type, site))) is None:
            foreign.append(reference)
    return foreign
