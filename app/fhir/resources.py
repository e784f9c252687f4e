"""Parsing and validating FHIR R4 JSON with fhir.resources' R4B models.

R4B, not the package's default R5: real R4 payloads (e.g. MedicationAdministration.medicationCodeableConcept)
are invalid R5. R4 and R4B share the structure of every resource the trial uses. Validation is a gate:
what is stored is the JSON as sent (plus server meta), never the model's re-serialisation.
"""

import json
import math
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from app.fhir.outcome import FhirError, Issue, error
from app.fhir.search_params import INDEXED_CHARS

# Required bindings (FHIR R4 valueset-*.html) that the models do not enforce, for the elements the trial's
# logic reads: a result whose status is not one of these cannot be told usable or withdrawn.
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("Observation", "status"): frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("DiagnosticReport", "status"): frozenset(
        {
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("MedicationAdministration", "status"): frozenset(
        {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}
    ),
    ("MedicationStatement", "status"): frozenset(
        {"active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"}
    ),
    ("Procedure", "status"): frozenset(
        {
            "preparation",
            "in-progress",
            "not-done",
            "on-hold",
            "stopped",
            "completed",
            "entered-in-error",
            "unknown",
        }
    ),
    ("Consent", "status"): frozenset(
        {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}
    ),
    ("ResearchSubject", "status"): frozenset(
        {
            "candidate",
            "eligible",
            "follow-up",
            "ineligible",
            "not-registered",
            "off-study",
            "on-study",
            "on-study-intervention",
            "on-study-observation",
            "pending-on-study",
            "potential-candidate",
            "screening",
            "withdrawn",
        }
    ),
    ("Specimen", "status"): frozenset({"available", "unavailable", "unsatisfactory", "entered-in-error"}),
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
}
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_JSON_DEPTH = 64
MAX_STRING_CHARS = 1_000_000
# FHIR strings (datatypes.html#string) exclude code points below U+0020 but tab, CR and LF; JSON can still
# escape them, and lone surrogates, which no database column can store. Escapes are the only way in.
SUSPECT_ESCAPE = re.compile(r"\\u(?:00[01][0-9a-fA-F]|[dD][89a-fA-F][0-9a-fA-F]{2})")
FORBIDDEN_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")


class _BadNumber(ValueError):
    pass


@cache
def resource_class(resource_type: str) -> type[Resource] | None:
    """The R4B model class of a resource type, or None when the name is not a FHIR resource."""
    if not resource_type or not resource_type[0].isupper():
        return None
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError, ImportError):
        return None
    if not issubclass(model, Resource):
        return None
    return model


def is_resource_type(name: str) -> bool:
    return resource_class(name) is not None


def parse_json(body: bytes, *, max_string_chars: int = MAX_STRING_CHARS) -> Any:
    """Decode a request body; malformed JSON is a 400 that says where it broke, an oversized string a 413."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(400, "structure", f"Body is not UTF-8: byte {exc.start}") from None
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise error(
            400, "structure", f"Malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise error(400, "structure", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except _BadNumber as exc:
        raise error(400, "structure", f"Malformed JSON: {exc}") from None
    except ValueError:  # an integer past Python's int_max_str_digits (4300)
        raise error(400, "structure", "Malformed JSON: a number has too many digits") from None
    depth, longest = _measure(data)
    if depth > MAX_JSON_DEPTH:
        raise error(400, "structure", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if longest > max_string_chars:
        where = _find(data, lambda s: len(s) > max_string_chars)
        limit = f"A string is longer than the limit of {max_string_chars} characters"
        raise error(413, "too-long", limit, where)
    if SUSPECT_ESCAPE.search(text):
        where = _find(data, lambda s: FORBIDDEN_CHAR.search(s) is not None)
        if where:
            message = "Control characters and unpaired surrogates are not allowed in FHIR strings"
            raise error(400, "value", message, where)
    return data


def _no_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"the number {text[:20]} is out of range")
    return value


def _measure(value: Any) -> tuple[int, int]:
    """Nesting depth (counted up to just past the limit) and the length of the longest string or key."""
    depth, longest, level = 0, 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
                longest = max(longest, max(map(len, v), default=0))
            elif isinstance(v, list):
                nxt.extend(v)
            elif isinstance(v, str):
                longest = max(longest, len(v))
        level = nxt
        if depth > MAX_JSON_DEPTH + 1:
            break
    return depth - 1, longest


def _find(data: Any, bad: Callable[[str], bool]) -> str:
    """The FHIRPath-like location of the first string (or key) that is `bad`: Bundle.entry[2].resource.id."""
    root = data.get("resourceType") if isinstance(data, dict) else None
    stack: list[tuple[Any, str]] = [(data, root if isinstance(root, str) and root.isalpha() else "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, child in value.items():
                name = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", key) else "<key>"
                if bad(key):
                    return f"{path}.{name}"
                stack.append((child, f"{path}.{name}"))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(value))
        elif isinstance(value, str) and bad(value):
            return path
    return ""


def validate_resource(data: Any, *, expected_type: str | None = None) -> str:
    """Validate one resource; returns its type. Errors carry FHIRPath expressions from the resource root."""
    if not isinstance(data, dict):
        raise error(400, "structure", "A resource must be a JSON object")
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str):
        raise error(400, "required", "resourceType is missing", "resourceType")
    model = resource_class(resource_type)
    if model is None:
        raise error(400, "not-supported", f"Unknown resource type '{resource_type}'", "resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise error(
            400,
            "invalid",
            f"Resource type '{resource_type}' does not match '{expected_type}' in the URL",
            f"{resource_type}.resourceType",
        )
    resource_id = data.get("id")
    if resource_id is not None and (not isinstance(resource_id, str) or not ID_PATTERN.match(resource_id)):
        raise error(400, "value", f"Invalid resource id {resource_id!r}", f"{resource_type}.id")
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise FhirError(400, [_issue(resource_type, e) for e in exc.errors(include_url=False)]) from None
    except (ValueError, TypeError) as exc:
        raise error(400, "invalid", f"Invalid {resource_type}: {exc}", resource_type) from None
    _check_identifiers(resource_type, data.get("identifier"))
    for (bound_type, element), codes in REQUIRED_CODES.items():
        value = data.get(element)
        if bound_type == resource_type and value is not None and value not in codes:
            raise error(
                400,
                "code-invalid",
                f"{value!r} is not a valid {resource_type}.{element} code",
                f"{resource_type}.{element}",
            )
    return resource_type


def _check_identifiers(resource_type: str, identifiers: Any) -> None:
    """Business identifiers are the natural key: one too long to store is refused, naming it."""
    for i, identifier in enumerate(identifiers if isinstance(identifiers, list) else [identifiers]):
        for part in ("system", "value"):
            text = identifier.get(part) if isinstance(identifier, dict) else None
            if isinstance(text, str) and len(text) > INDEXED_CHARS:
                index = f"[{i}]" if isinstance(identifiers, list) else ""
                where = f"{resource_type}.identifier{index}.{part}"
                raise error(
                    400,
                    "too-long",
                    f"identifier {part} has {len(text)} characters; mrdhub keeps identifiers of at most "
                    f"{INDEXED_CHARS}",
                    where,
                )


def _issue(resource_type: str, err: Any) -> Issue:
    path = resource_type + _fhirpath(err.get("loc", ()))
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    kind = str(err.get("type", ""))
    if "missing" in kind:
        code = "required"
    elif kind == "extra_forbidden":
        code = "structure"
        message = "Unknown element"
    else:
        code = "value"
    return Issue("error", code, message, (path,))


def _fhirpath(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            # fhir.resources names a primitive's extension `status__ext` and a Python keyword `class_`.
            if part.endswith("__ext"):
                part = "_" + part[: -len("__ext")]
            out += "." + (part[:-1] if part.endswith("_") and not part.startswith("_") else part)
    return out
