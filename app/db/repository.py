"""Persistence of FHIR resources: the only module writing the store's tables. It flushes, never commits.

Resource rows are read as plain `Stored` values and written with SQLAlchemy Core in batches, not through
the ORM unit of work: whatever the number of entries, a bundle's new resources are one INSERT ... RETURNING,
and their versions, identifiers and search values one more statement (on PostgreSQL; an executemany per
table elsewhere).
"""

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from app.db import derived
from app.db.tables import Base, IdentifierRow, ResourceRow, ResourceVersionRow, SearchIndexRow
from app.fhir.search_params import index_values


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


RESOURCES = _table(ResourceRow)
VERSIONS = _table(ResourceVersionRow)
IDENTIFIERS = _table(IdentifierRow)
SEARCH_INDEX = _table(SearchIndexRow)
# The current version of a resource, in the order of `Stored`'s fields.
CURRENT = (
    ResourceRow.pk,
    ResourceRow.resource_type,
    ResourceRow.logical_id,
    ResourceRow.version_id,
    ResourceRow.last_updated,
    ResourceRow.deleted,
    ResourceRow.content,
)
CurrentSelect = Select[int, str, str | None, int, datetime, bool, str]
# Rows to insert, column by column: each column's values in one list.
Columns = dict[str, list[Any]]
# Built once: the statement every write runs first.
BY_NATURAL_KEYS = (
    select(IdentifierRow.resource_type, IdentifierRow.system, IdentifierRow.value, *CURRENT)
    .join(ResourceRow, ResourceRow.pk == IdentifierRow.resource_pk)
    .where(
        tuple_(IdentifierRow.resource_type, IdentifierRow.system, IdentifierRow.value).in_(
            bindparam("keys", expanding=True)
        ),
        ResourceRow.deleted.is_(False),
    )
)


@dataclass(frozen=True, slots=True)
class Stored:
    """A resource's current version as the store holds it (content is the stored JSON text)."""

    pk: int
    resource_type: str
    logical_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: str


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version to append and make current; `pk` None means the resource itself is new."""

    pk: int | None
    resource_type: str
    logical_id: str
    version_id: int
    method: str
    content: dict[str, Any] | None  # None: a deletion, which keeps the last content as its text
    text: str


def dumps(content: dict[str, Any]) -> str:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def loads(text: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(text)
    return value


def _stored(row: Any) -> Stored:
    return Stored(*row)


def get(session: Session, resource_type: str, logical_id: str, *, for_update: bool = False) -> Stored | None:
    query = select(*CURRENT).where(
        ResourceRow.resource_type == resource_type, ResourceRow.logical_id == logical_id
    )
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).one_or_none()
    return _stored(row) if row is not None else None


def get_many(session: Session, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
    """Current rows for many (type, id) pairs in one query."""
    if not keys:
        return {}
    query = select(*CURRENT).where(tuple_(ResourceRow.resource_type, ResourceRow.logical_id).in_(list(keys)))
    found = (_stored(row) for row in session.execute(query))
    return {(s.resource_type, s.logical_id): s for s in found}


def by_natural_keys(
    session: Session, keys: Collection[tuple[str, str, str]]
) -> dict[tuple[str, str, str], Stored]:
    """The live resource holding each (type, system, value) business identifier, in one query."""
    if not keys:
        return {}
    rows = session.execute(BY_NATURAL_KEYS, {"keys": list(keys)})
    return {(row[0], row[1], row[2]): _stored(row[3:]) for row in rows}


def refresh_statistics(session: Session) -> None:
    """After a bulk load: PostgreSQL plans with the statistics of the tables as they were before it (empty,
    for a first load) until autovacuum gets to them, and conditional-create lookups then scan."""
    if session.get_bind().dialect.name == "postgresql":
        for table in (ResourceRow, ResourceVersionRow, IdentifierRow, SearchIndexRow):
            session.execute(text(f"ANALYZE {table.__tablename__}"))


def write_versions(session: Session, versions: Sequence[NewVersion], *, now: datetime) -> list[int]:
    """Append versions (at most one per resource) and make them current; returns the resources' pks.

    Old identifiers and search values of existing resources are replaced by those of the new version;
    rows are written in key order so that concurrent writers take their locks in the same order.
    """
    new = [v for v in versions if v.pk is None]
    inserted = iter(_insert_resources(session, new, now=now))
    pks = [v.pk if v.pk is not None else next(inserted) for v in versions]
    existing = sorted((pk, v) for pk, v in zip(pks, versions, strict=True) if v.pk is not None)
    old_links: list[tuple[str, str, str | None]] = []
    if existing:
        _update_resources(session, existing, now=now)
        old = [pk for pk, _ in existing]
        old_links = derived.links_of(session, old)
        session.execute(delete(IdentifierRow).where(IdentifierRow.resource_pk.in_(old)))
        session.execute(delete(SearchIndexRow).where(SearchIndexRow.resource_pk.in_(old)))
    version_rows: Columns = {
        "resource_pk": pks,
        "version_id": [v.version_id for v in versions],
        "last_updated": [now] * len(versions),
        "deleted": [v.content is None for v in versions],
        "method": [v.method for v in versions],
        "content": [v.text for v in versions],
    }
    live = [(pk, v) for pk, v in zip(pks, versions, strict=True) if v.content is not None]
    index = _index_rows(live)
    _insert(session, [(VERSIONS, version_rows), *index])
    # The patients whose records these versions change, before and after: their derived rows are stale.
    links = old_links
    for table, columns in index:
        if table is SEARCH_INDEX:
            links += zip(columns["resource_type"], columns["param"], columns["value"], strict=True)
    derived.invalidate(session, written=[(v.resource_type, v.logical_id) for v in versions], links=links)
    return pks


def _insert_resources(session: Session, new: list[NewVersion], *, now: datetime) -> list[int]:
    if not new:
        return []
    columns: Columns = {
        "resource_type": [v.resource_type for v in new],
        "logical_id": [v.logical_id for v in new],
        "version_id": [v.version_id for v in new],
        "last_updated": [now] * len(new),
        "deleted": [v.content is None for v in new],
        "content": [v.text for v in new],
    }
    if _has_binary_arrays(session):
        dialect = session.get_bind().dialect
        sql = _unnest_inserts(dialect, ((RESOURCES, tuple(columns)),), ("pk", "resource_type", "logical_id"))
        rows = session.connection().exec_driver_sql(sql, _parameters([(RESOURCES, columns)]))
        # RETURNING's order is not promised to follow the arrays': match the rows by their unique key.
        pks = {(t, i): pk for pk, t, i in rows}
        return [pks[(v.resource_type, v.logical_id)] for v in new]
    statement = insert(RESOURCES).returning(RESOURCES.c.pk, sort_by_parameter_order=True)
    return [pk for (pk,) in session.execute(statement, _rows(columns))]


def _update_resources(session: Session, existing: list[tuple[int, NewVersion]], *, now: datetime) -> None:
    statement = (
        update(RESOURCES)
        .where(RESOURCES.c.pk == bindparam("row_pk"))
        .values(
            version_id=bindparam("row_version"),
            last_updated=now,
            deleted=bindparam("row_deleted"),
            content=bindparam("row_content"),
        )
    )
    session.execute(
        statement,
        [
            {
                "row_pk": pk,
                "row_version": v.version_id,
                "row_deleted": v.content is None,
                "row_content": v.text,
            }
            for pk, v in existing
        ],
    )


def _index_rows(written: Iterable[tuple[int, NewVersion]]) -> list[tuple[Table, Columns]]:
    """The natural keys and the search values of the written versions."""
    # A set per resource, not per batch: two resources claiming one identifier must meet the constraint.
    identifiers: set[tuple[str, str, str, int]] = set()
    values: Columns = {
        name: [] for name in ("resource_pk", "resource_type", "param", "system", "value", "start", "end")
    }
    for pk, v in written:
        assert v.content is not None
        for value in index_values(v.content):
            if value.param == "identifier" and value.value:
                identifiers.add((v.resource_type, value.system or "", value.value, pk))
            values["resource_pk"].append(pk)
            values["resource_type"].append(v.resource_type)
            values["param"].append(value.param)
            values["system"].append(value.system)
            values["value"].append(value.value)
            values["start"].append(value.start)
            values["end"].append(value.end)
    rows: list[tuple[Table, Columns]] = []
    if identifiers:
        ordered = sorted(identifiers)
        keys: Columns = {
            "resource_type": [i[0] for i in ordered],
            "system": [i[1] for i in ordered],
            "value": [i[2] for i in ordered],
            "resource_pk": [i[3] for i in ordered],
        }
        rows.append((IDENTIFIERS, keys))
    if values["resource_pk"]:
        rows.append((SEARCH_INDEX, values))
    return rows


def _has_binary_arrays(session: Session) -> bool:
    return session.get_bind().dialect.driver == "psycopg"


def _insert(session: Session, inserts: list[tuple[Table, Columns]]) -> None:
    """Insert rows, given column by column, into one or more tables.

    With psycopg: one statement for all the tables, each column an array sent in binary and unnested into
    rows by PostgreSQL. Its text depends only on the tables and columns, so it is prepared once per
    connection, and the driver does no per-row work: a bundle's rows cost a third of executemany's CPU.
    Elsewhere, an executemany per table.
    """
    if _has_binary_arrays(session):
        dialect = session.get_bind().dialect
        sql = _unnest_inserts(dialect, tuple((table, tuple(columns)) for table, columns in inserts))
        session.connection().exec_driver_sql(sql, _parameters(inserts))
    else:
        for table, columns in inserts:
            session.execute(insert(table), _rows(columns))


def _rows(columns: Columns) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _parameters(inserts: list[tuple[Table, Columns]]) -> dict[str, list[Any]]:
    return {f"{table.name}__{name}": values for table, columns in inserts for name, values in columns.items()}


@cache
def _unnest_inserts(
    dialect: Dialect, shapes: tuple[tuple[Table, tuple[str, ...]], ...], returning: tuple[str, ...] = ()
) -> str:
    """`INSERT INTO t (a, b) SELECT * FROM unnest(CAST(%(t__a)b AS T[]), ...)`, in psycopg's paramstyle,
    for each (table, columns); several are chained as data-modifying WITH queries of one statement.

    `%(...)b` asks psycopg for the binary format. Strings are cast to unbounded text arrays: a cast to
    varchar(n) would silently truncate, while the insert into the varchar(n) column rejects a value that is
    too long, as a plain INSERT does.
    """
    quote = dialect.identifier_preparer.quote

    def one(table: Table, names: tuple[str, ...]) -> str:
        def array(name: str) -> str:
            column_type = table.c[name].type
            sql_type = "TEXT" if isinstance(column_type, String) else column_type.compile(dialect=dialect)
            return f"CAST(%({table.name}__{name})b AS {sql_type}[])"

        targets = ", ".join(quote(name) for name in names)
        arrays = ", ".join(array(name) for name in names)
        return f"INSERT INTO {quote(table.name)} ({targets}) SELECT * FROM unnest({arrays})"

    *chained, sql = [one(table, names) for table, names in shapes]
    if chained:
        sql = f"WITH {', '.join(f'w{i} AS ({s})' for i, s in enumerate(chained))} {sql}"
    if returning:
        sql += f" RETURNING {', '.join(quote(n) for n in returning)}"
    return sql


def versions(session: Session, resource: Stored) -> list[ResourceVersionRow]:
    return list(
        session.scalars(
            select(ResourceVersionRow)
            .where(ResourceVersionRow.resource_pk == resource.pk)
            .order_by(ResourceVersionRow.version_id.desc())
        )
    )


def version(session: Session, resource: Stored, version_id: int) -> ResourceVersionRow | None:
    return session.scalars(
        select(ResourceVersionRow).where(
            ResourceVersionRow.resource_pk == resource.pk, ResourceVersionRow.version_id == version_id
        )
    ).one_or_none()


def type_history(
    session: Session, resource_type: str, *, count: int, offset: int
) -> tuple[int, list[tuple[ResourceVersionRow, str]]]:
    """A page of every version of a type, newest first, each with its resource's logical id."""
    base = (
        select(ResourceVersionRow, ResourceRow.logical_id)
        .join(ResourceRow, ResourceRow.pk == ResourceVersionRow.resource_pk)
        .where(ResourceRow.resource_type == resource_type)
    )
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.execute(
        base.order_by(ResourceVersionRow.last_updated.desc(), ResourceVersionRow.pk.desc())
        .limit(count)
        .offset(offset)
    )
    return total, [(v, str(logical_id)) for v, logical_id in rows]


def matches(
    session: Session, resource_type: str, conditions: list[ColumnElement[bool]], *, limit: int
) -> list[Stored]:
    """The first `limit` live matches, without counting them all (for conditional interactions)."""
    query = _live(resource_type, conditions).order_by(ResourceRow.pk).limit(limit)
    return [_stored(row) for row in session.execute(query)]


def search(
    session: Session,
    resource_type: str,
    conditions: list[ColumnElement[bool]],
    *,
    sort: str | None,
    count: int,
    offset: int,
) -> tuple[int, list[Stored]]:
    base = _live(resource_type, conditions)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    query = _sorted(base, resource_type, sort)
    return total, [_stored(row) for row in session.execute(query.limit(count).offset(offset))]


def _live(resource_type: str, conditions: list[ColumnElement[bool]]) -> CurrentSelect:
    return select(*CURRENT).where(
        ResourceRow.resource_type == resource_type, ResourceRow.deleted.is_(False), *conditions
    )


def _sorted(query: CurrentSelect, resource_type: str, sort: str | None) -> CurrentSelect:
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
