"""Persistence of FHIR resources: the only module writing the store's tables. It flushes, never commits."""

import json
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select
from sqlalchemy.orm import Session

from app.db.tables import IdentifierRow, ResourceRow, ResourceVersionRow, SearchIndexRow
from app.fhir.search_params import IndexValue, index_values


def dumps(content: dict[str, Any]) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    return value


def get(
    session: Session, resource_type: str, logical_id: str, *, for_update: bool = False
) -> ResourceRow | None:
    query = select(ResourceRow).where(
        ResourceRow.resource_type == resource_type, ResourceRow.logical_id == logical_id
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def get_many(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], ResourceRow]:
    """Current rows for many (type, id) pairs in one query."""
    if not keys:
        return {}
    found: dict[tuple[str, str], ResourceRow] = {}
    by_type: dict[str, list[str]] = {}
    for resource_type, logical_id in keys:
        by_type.setdefault(resource_type, []).append(logical_id)
    for resource_type, ids in by_type.items():
        rows = session.scalars(
            select(ResourceRow).where(
                ResourceRow.resource_type == resource_type, ResourceRow.logical_id.in_(ids)
            )
        )
        for row in rows:
            found[(resource_type, str(row.logical_id))] = row
    return found


def by_identifiers(
    session: Session, resource_type: str, identifiers: list[tuple[str, str]]
) -> list[ResourceRow]:
    """Live resources of a type holding any of the (system, value) business identifiers."""
    if not identifiers:
        return []
    matches = or_(*(and_(IdentifierRow.system == s, IdentifierRow.value == v) for s, v in identifiers))
    query = (
        select(ResourceRow)
        .join(IdentifierRow, IdentifierRow.resource_pk == ResourceRow.pk)
        .where(IdentifierRow.resource_type == resource_type, matches, ResourceRow.deleted.is_(False))
        .distinct()
        .order_by(ResourceRow.pk)
    )
    return list(session.scalars(query))


def allocate(session: Session, resource_type: str, logical_id: str | None, now: datetime) -> ResourceRow:
    """A new resource row with no version yet; the server id is the row's key unless the client chose one."""
    row = ResourceRow(
        resource_type=resource_type,
        logical_id=logical_id,
        version_id=0,
        last_updated=now,
        deleted=False,
        content="{}",
    )
    session.add(row)
    session.flush()
    if logical_id is None:
        row.logical_id = str(row.pk)
        session.flush()
    return row


def write_version(
    session: Session, row: ResourceRow, content: dict[str, Any] | None, *, method: str, now: datetime
) -> None:
    """Append a version (content None = deleted) and make it current, re-indexing the resource."""
    row.version_id += 1
    row.last_updated = now
    row.deleted = content is None
    text = dumps(content) if content is not None else row.content
    row.content = text
    session.add(
        ResourceVersionRow(
            resource_pk=row.pk,
            version_id=row.version_id,
            last_updated=now,
            deleted=row.deleted,
            method=method,
            content=text,
        )
    )
    session.execute(delete(IdentifierRow).where(IdentifierRow.resource_pk == row.pk))
    session.execute(delete(SearchIndexRow).where(SearchIndexRow.resource_pk == row.pk))
    if content is not None:
        _index(session, row, content)
    session.flush()


def _index(session: Session, row: ResourceRow, content: dict[str, Any]) -> None:
    values = index_values(content)
    identifiers = {(v.system or "", v.value) for v in values if v.param == "identifier" and v.value}
    for system, value in sorted(identifiers):
        session.add(
            IdentifierRow(resource_pk=row.pk, resource_type=row.resource_type, system=system, value=value)
        )
    for v in values:
        session.add(_index_row(row, v))


def _index_row(row: ResourceRow, v: IndexValue) -> SearchIndexRow:
    return SearchIndexRow(
        resource_pk=row.pk,
        resource_type=row.resource_type,
        param=v.param,
        system=v.system,
        value=v.value,
        start=v.start,
        end=v.end,
    )


def versions(session: Session, row: ResourceRow) -> list[ResourceVersionRow]:
    return list(
        session.scalars(
            select(ResourceVersionRow)
            .where(ResourceVersionRow.resource_pk == row.pk)
            .order_by(ResourceVersionRow.version_id.desc())
        )
    )


def version(session: Session, row: ResourceRow, version_id: int) -> ResourceVersionRow | None:
    return session.scalars(
        select(ResourceVersionRow).where(
            ResourceVersionRow.resource_pk == row.pk, ResourceVersionRow.version_id == version_id
        )
    ).one_or_none()


def type_history(
    session: Session, resource_type: str, *, count: int, offset: int
) -> tuple[int, list[tuple[ResourceVersionRow, ResourceRow]]]:
    base = (
        select(ResourceVersionRow, ResourceRow)
        .join(ResourceRow, ResourceRow.pk == ResourceVersionRow.resource_pk)
        .where(ResourceRow.resource_type == resource_type)
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(ResourceVersionRow.last_updated.desc(), ResourceVersionRow.pk.desc())
        .limit(count)
        .offset(offset)
    )
    return total, list(rows)


def search(
    session: Session,
    resource_type: str,
    conditions: list[ColumnElement[bool]],
    *,
    sort: str | None,
    count: int,
    offset: int,
) -> tuple[int, list[ResourceRow]]:
    base = select(ResourceRow).where(
        ResourceRow.resource_type == resource_type, ResourceRow.deleted.is_(False), *conditions
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    query = _sorted(base, resource_type, sort)
    return total, list(session.scalars(query.limit(count).offset(offset)))


def _sorted(
    query: Select[ResourceRow], resource_type: str, sort: str | None
) -> Select[ResourceRow]:
    if sort in ("date", "-date"):
        first_date = (
            select(func.min(SearchIndexRow.start))
            .where(
                SearchIndexRow.resource_pk == ResourceRow.pk,
                SearchIndexRow.resource_type == resource_type,
                SearchIndexRow.param.in_(("date", "birthdate", "effective-time", "effective", "onset-date")),
            )
            .correlate(ResourceRow)
            .scalar_subquery()
        )
        ordered = first_date.desc() if sort == "-date" else first_date.asc()
        return query.order_by(ordered.nulls_last(), ResourceRow.pk)
    if sort == "_lastUpdated":
        return query.order_by(ResourceRow.last_updated, ResourceRow.pk)
    if sort == "-_lastUpdated":
        return query.order_by(ResourceRow.last_updated.desc(), ResourceRow.pk.desc())
    return query.order_by(ResourceRow.pk)


def indexed(resource_type: str, param: str, *clauses: ColumnElement[bool]) -> ColumnElement[bool]:
    """`resource has a search value for param matching clauses`, as a condition on ResourceRow."""
    matching = select(SearchIndexRow.resource_pk).where(
        SearchIndexRow.resource_type == resource_type, SearchIndexRow.param == param, *clauses
    )
    return ResourceRow.pk.in_(matching)
