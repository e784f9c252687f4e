"""How numbers read on the pages: rates as percent with one decimal, p-values as the API gives them."""

from collections.abc import Callable, Sequence
from typing import Any

NONE = "\N{EN DASH}"  # an empty cell
RANGE = "\N{EN DASH}"


def percent(fraction: float | None, digits: int = 1) -> str:
    return NONE if fraction is None else f"{fraction * 100:.{digits}f} %"


def interval(bounds: Sequence[float | None] | None) -> str:
    if not bounds or bounds[0] is None or bounds[1] is None:
        return NONE
    return f"{bounds[0] * 100:.1f}{RANGE}{bounds[1] * 100:.1f} %"


def number(value: float | int | None) -> str:
    return NONE if value is None else f"{value:g}"


def short_reference(reference: str | None) -> str:
    """`Observation/3ef37a09…/_history/1` shortened for a table cell (the full one is in its title)."""
    if not reference:
        return NONE
    kind, _, rest = reference.partition("/")
    logical, _, version = rest.partition("/_history/")
    return f"{kind}/{short_id(logical)}" + (f" v{version}" if version else "")


def short_id(logical_id: str) -> str:
    return logical_id if len(logical_id) <= 10 else f"{logical_id[:8]}…"


def label(name: str | None) -> str:
    return NONE if name is None else name.replace("-", " ").replace("_", " ")


FILTERS: dict[str, Callable[..., Any]] = {
    "percent": percent,
    "interval": interval,
    "number": number,
    "shortref": short_reference,
    "shortid": short_id,
    "label": label,
}
