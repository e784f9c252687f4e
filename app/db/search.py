"""Turning parsed FHIR search filters into conditions on the store's search index."""

from datetime import datetime

from sqlalchemy import ColumnElement, and_, false, or_
from sqlalchemy.orm import InstrumentedAttribute

from app.db.repository import indexed
from app.db.sites import visible
from app.db.tables import ResourceRow, SearchIndexRow
from app.fhir.search import DateValue, Filter, TokenValue
from app.fhir.search_params import clip

DateColumn = InstrumentedAttribute[datetime] | InstrumentedAttribute[datetime | None]


def conditions(resource_type: str, filters: list[Filter]) -> list[ColumnElement[bool]]:
    """The filters, and the current request's site scope: a search never shows another site's patients."""
    return [_condition(resource_type, f) for f in filters] + [visible(resource_type)]


def _condition(resource_type: str, f: Filter) -> ColumnElement[bool]:
    alternatives: list[ColumnElement[bool]] = []
    for value in f.values:
        if f.kind == "id" and isinstance(value, str):
            alternatives.append(ResourceRow.logical_id == value)
        elif f.kind == "lastUpdated" and isinstance(value, DateValue):
            # lastUpdated is an instant: its range is the instant itself.
            alternatives.append(_compare(ResourceRow.last_updated, ResourceRow.last_updated, value))
        elif f.kind == "token" and isinstance(value, TokenValue):
            alternatives.append(indexed(resource_type, f.name, *_token(value)))
        elif f.kind == "reference" and isinstance(value, str):
            alternatives.append(indexed(resource_type, f.name, _reference(value)))
        elif f.kind == "date" and isinstance(value, DateValue):
            alternatives.append(
                indexed(resource_type, f.name, _compare(SearchIndexRow.start, SearchIndexRow.end, value))
            )
    return or_(*alternatives) if alternatives else false()


def _token(value: TokenValue) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if value.system is not None:
        clauses.append(SearchIndexRow.system == clip(value.system))
    if value.code is not None:
        clauses.append(SearchIndexRow.value == clip(value.code))
    return clauses


def _reference(value: str) -> ColumnElement[bool]:
    head, sep, _ = value.partition("/_history/")
    value = head if sep else value
    if "/" in value:
        # An absolute reference to this server's resource is the same as the relative one.
        relative = "/".join(value.rstrip("/").split("/")[-2:])
        return SearchIndexRow.value == clip(relative)
    return SearchIndexRow.value.like(f"%/{clip(value)}")


def _compare(start: DateColumn, end: DateColumn, v: DateValue) -> ColumnElement[bool]:
    """Compare the resource's range [start, end) with the parameter's range (search.html#date).

    For an instant (lastUpdated) pass the same column as start and end: `end > x` then reads `start >= x`
    at millisecond precision, which is what the store keeps.
    """
    point = start is end
    match v.prefix:
        case "eq":
            return and_(start >= v.start, (start < v.end) if point else (end <= v.end))
        case "ne":
            return or_(start < v.start, (start >= v.end) if point else (end > v.end))
        case "gt":
            return (start >= v.end) if point else (end > v.end)
        case "ge":
            return (start >= v.start) if point else (end > v.start)
        case "lt":
            return start < v.start
        case "le":
            return start < v.end
    raise AssertionError(v.prefix)
