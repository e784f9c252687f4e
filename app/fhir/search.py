"""Parsing a FHIR search query string into typed filters (FHIR R4 search.html)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from app.fhir.dates import search_range
from app.fhir.outcome import Issue, error
from app.fhir.search_params import COMMON, CONTROL, SORTS, SearchParam, params_for

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le"]
PREFIXES: tuple[Prefix, ...] = ("eq", "ne", "gt", "lt", "ge", "le")
MAX_DIGITS = 9  # paging beyond a billion results is a mistake, and SQLite cannot bind a larger offset


@dataclass(frozen=True)
class TokenValue:
    system: str | None  # None: any system; "": explicitly no system
    code: str | None  # None: `system|` (any code of the system)


@dataclass(frozen=True)
class DateValue:
    prefix: Prefix
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Filter:
    """One search parameter occurrence; its values are alternatives (comma = OR)."""

    name: str
    kind: Literal["token", "reference", "date", "id", "lastUpdated"]
    values: tuple[TokenValue | DateValue | str, ...]


@dataclass
class SearchQuery:
    resource_type: str
    filters: list[Filter] = field(default_factory=list)
    count: int = 50
    offset: int = 0
    sort: str | None = None
    warnings: list[Issue] = field(default_factory=list)


def parse_search(
    resource_type: str,
    items: list[tuple[str, str]],
    *,
    lenient: bool = False,
    default_count: int = 50,
    max_count: int = 500,
) -> SearchQuery:
    """Unknown parameters are an error unless the client asked for lenient handling (search.html#errors)."""
    query = SearchQuery(resource_type, count=default_count)
    known = params_for(resource_type)
    for raw_name, raw_value in items:
        name, _, modifier = raw_name.partition(":")
        if name in CONTROL:
            _control(query, name, raw_value, max_count)
            continue
        param = known.get(name)
        if (param is None and name not in COMMON) or modifier:
            why = f"modifier ':{modifier}' is not supported" if modifier else "is not supported"
            message = f"Search parameter '{raw_name}' {why} for {resource_type}"
            if lenient:
                query.warnings.append(Issue("warning", "not-supported", message + " (ignored)"))
                continue
            raise error(400, "not-supported", message)
        query.filters.append(_filter(name, param, raw_value))
    return query


def _control(query: SearchQuery, name: str, value: str, max_count: int) -> None:
    if name in ("_count", "_offset"):
        if not value.isdigit() or len(value) > MAX_DIGITS:
            raise error(
                400,
                "value",
                f"{name} must be a non-negative integer below 10^{MAX_DIGITS}, not '{value[:20]}'",
            )
        if name == "_count":
            query.count = min(int(value), max_count)
        else:
            query.offset = int(value)
    elif name == "_sort":
        if value not in SORTS:
            raise error(
                400, "not-supported", f"_sort={value} is not supported; use one of {', '.join(SORTS)}"
            )
        query.sort = value


def _filter(name: str, param: SearchParam | None, raw: str) -> Filter:
    parts = [p for p in raw.split(",") if p != ""]
    if not parts:
        raise error(400, "value", f"Search parameter '{name}' has no value")
    if name == "_id":
        return Filter(name, "id", tuple(parts))
    if name == "_lastUpdated":
        return Filter(name, "lastUpdated", tuple(_date(name, p) for p in parts))
    assert param is not None
    if param.kind == "token":
        return Filter(name, "token", tuple(_token(p) for p in parts))
    if param.kind == "date":
        return Filter(name, "date", tuple(_date(name, p) for p in parts))
    return Filter(name, "reference", tuple(parts))


def _token(text: str) -> TokenValue:
    if "|" not in text:
        return TokenValue(None, text)
    system, _, code = text.partition("|")
    return TokenValue(system, code or None)


def _date(name: str, text: str) -> DateValue:
    prefix: Prefix = "eq"
    if text[:2] in PREFIXES:
        prefix, text = text[:2], text[2:]  # type: ignore[assignment]
    start, end = search_range(text, name)
    return DateValue(prefix, start, end)
