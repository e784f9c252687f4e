"""References inside a resource: find them (with their FHIRPath) and rewrite them."""

from collections.abc import Callable, Iterator
from typing import Any

from app.fhir.resources import is_resource_type


def iter_references(resource: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Yield (FHIRPath, reference string) for every `reference` element, contained resources excluded."""
    root = str(resource.get("resourceType", "Resource"))
    yield from _walk(resource, root, skip_contained=True)


def _walk(node: Any, path: str, *, skip_contained: bool = False) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if skip_contained and key == "contained":
                continue
            if key == "reference" and isinstance(value, str):
                yield f"{path}.reference", value
            elif isinstance(value, dict | list):
                yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, f"{path}[{i}]")


def rewrite_references(node: Any, replace: Callable[[str], str]) -> None:
    """Rewrite every `reference` string in place (contained resources included)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                node[key] = replace(value)
            elif isinstance(value, dict | list):
                rewrite_references(value, replace)
    elif isinstance(node, list):
        for item in node:
            rewrite_references(item, replace)


def local_target(reference: str) -> tuple[str, str] | None:
    """(type, id) for a relative literal reference `Type/id` or `Type/id/_history/n`; None otherwise.

    Absolute URLs point at other servers, `#x` at contained resources, `urn:` at bundle entries:
    none of them is a local resource to check.
    """
    if reference.startswith("#") or ":" in reference or "?" in reference:
        return None
    parts = reference.split("/")
    if len(parts) in (2, 4) and is_resource_type(parts[0]) and parts[1]:
        if len(parts) == 4 and parts[2] != "_history":
            return None
        return parts[0], parts[1]
    return None
