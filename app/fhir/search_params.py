"""Which search parameters each indexed resource type supports, and how to read their values.

Kept as a table so that the CapabilityStatement, the indexer and the query parser agree by construction.
Paths are the element names of FHIR R4 (search parameter registry, searchparameter-registry.html).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from app.fhir.dates import fhir_range

Kind = Literal["token", "reference", "date"]


@dataclass(frozen=True)
class SearchParam:
    name: str
    kind: Kind
    paths: tuple[str, ...]
    target: str | None = None  # for `patient`: only references to this type count


def _subject(path: str = "subject") -> tuple[SearchParam, SearchParam]:
    return (
        SearchParam("subject", "reference", (path,)),
        SearchParam("patient", "reference", (path,), target="Patient"),
    )


IDENTIFIER = SearchParam("identifier", "token", ("identifier",))
STATUS = SearchParam("status", "token", ("status",))

PARAMS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        SearchParam("birthdate", "date", ("birthDate",)),
        SearchParam("organization", "reference", ("managingOrganization",)),
    ),
    "Observation": (
        *_subject(),
        SearchParam("code", "token", ("code",)),
        SearchParam("date", "date", ("effectiveDateTime", "effectivePeriod", "effectiveInstant")),
        STATUS,
        SearchParam("specimen", "reference", ("specimen",)),
    ),
    "Specimen": (*_subject(), SearchParam("type", "token", ("type",))),
    "Condition": (
        *_subject(),
        SearchParam("code", "token", ("code",)),
        SearchParam("onset-date", "date", ("onsetDateTime", "onsetPeriod")),
    ),
    "MedicationAdministration": (
        *_subject(),
        SearchParam("code", "token", ("medicationCodeableConcept",)),
        SearchParam("effective-time", "date", ("effectiveDateTime", "effectivePeriod")),
        STATUS,
    ),
    "MedicationStatement": (
        *_subject(),
        SearchParam("code", "token", ("medicationCodeableConcept",)),
        SearchParam("effective", "date", ("effectiveDateTime", "effectivePeriod")),
        STATUS,
    ),
    "Procedure": (
        *_subject(),
        SearchParam("code", "token", ("code",)),
        SearchParam("date", "date", ("performedDateTime", "performedPeriod")),
        STATUS,
    ),
    "Consent": (
        SearchParam("patient", "reference", ("patient",), target="Patient"),
        SearchParam("category", "token", ("category",)),
        STATUS,
    ),
    "RiskAssessment": (*_subject(), SearchParam("date", "date", ("occurrenceDateTime", "occurrencePeriod"))),
    "ResearchStudy": (STATUS,),
    "ResearchSubject": (
        SearchParam("individual", "reference", ("individual",)),
        SearchParam("patient", "reference", ("individual",), target="Patient"),
        SearchParam("study", "reference", ("study",)),
        STATUS,
    ),
    "AdverseEvent": (*_subject(), SearchParam("date", "date", ("date",))),
    "ChargeItem": (
        *_subject(),
        SearchParam("entered-date", "date", ("occurrenceDateTime", "occurrencePeriod")),
    ),
    "Organization": (),
    # Trial-office records (e.g. manual anchors) are Basic resources about a patient.
    "Basic": (*_subject(), SearchParam("code", "token", ("code",))),
    "Encounter": (*_subject(), SearchParam("date", "date", ("period",)), STATUS),
    # The audit trail (IHE BALP): who (client), what (entities), which patient, when.
    "AuditEvent": (
        SearchParam("date", "date", ("recorded",)),
        SearchParam("agent", "token", ("agent.who.identifier",)),
        SearchParam("entity", "reference", ("entity.what",)),
        SearchParam("patient", "reference", ("entity.what",), target="Patient"),
        SearchParam("subtype", "token", ("subtype",)),
        SearchParam("outcome", "token", ("outcome",)),
    ),
    "Provenance": (
        SearchParam("target", "reference", ("target",)),
        SearchParam("patient", "reference", ("target",), target="Patient"),
        SearchParam("recorded", "date", ("recorded",)),
    ),
    "DiagnosticReport": (
        *_subject(),
        SearchParam("code", "token", ("code",)),
        SearchParam("date", "date", ("effectiveDateTime", "effectivePeriod")),
        STATUS,
        SearchParam("result", "reference", ("result",)),
    ),
}

INDEXED_TYPES = frozenset(PARAMS)
# Search parameters valid for every type (search.html#all); _id and _lastUpdated come from the row.
COMMON = ("_id", "_lastUpdated", "identifier")
CONTROL = ("_count", "_sort", "_offset", "_format", "_pretty", "_total")
SORTS = ("date", "-date", "_lastUpdated", "-_lastUpdated", "_id")


def params_for(resource_type: str) -> dict[str, SearchParam]:
    found = {p.name: p for p in PARAMS.get(resource_type, ())}
    found["identifier"] = IDENTIFIER
    return found


# The search index keeps this many characters of a system, code or reference: a longer one is indexed and
# searched by its first INDEXED_CHARS (the stored resource keeps it whole). Identifiers, the natural key,
# are refused beyond it instead (app/fhir/resources.py).
INDEXED_CHARS = 255


def clip(text: str) -> str:
    return text[:INDEXED_CHARS]


@dataclass(frozen=True)
class IndexValue:
    param: str
    system: str | None = None
    value: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.system is not None and len(self.system) > INDEXED_CHARS:
            object.__setattr__(self, "system", clip(self.system))
        if self.value is not None and len(self.value) > INDEXED_CHARS:
            object.__setattr__(self, "value", clip(self.value))


def index_values(resource: dict[str, Any]) -> list[IndexValue]:
    """The search values of one resource, deduplicated, in a stable order."""
    values: dict[IndexValue, None] = {}
    for param in params_for(str(resource.get("resourceType"))).values():
        for path in param.paths:
            for element in _at(resource, path):
                for v in _extract(param, path, element):
                    values[v] = None
    return list(values)


def _at(node: Any, path: str) -> list[Any]:
    """The elements at a dotted path ("agent.who.identifier"), descending through lists."""
    found = [node]
    for step in path.split("."):
        found = [item for f in found if isinstance(f, dict) for item in _as_list(f.get(step))]
    return found


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _extract(param: SearchParam, path: str, element: Any) -> Iterator[IndexValue]:
    if param.kind == "token":
        yield from _tokens(param.name, path, element)
    elif param.kind == "reference":
        reference = element.get("reference") if isinstance(element, dict) else None
        if isinstance(reference, str) and (param.target is None or reference.startswith(f"{param.target}/")):
            yield IndexValue(param.name, value=_strip_history(reference))
    elif param.kind == "date":
        yield from _dates(param.name, element)


def _tokens(name: str, path: str, element: Any) -> Iterator[IndexValue]:
    if isinstance(element, str):
        yield IndexValue(name, value=element)
    elif isinstance(element, dict) and path.endswith("identifier"):
        if isinstance(element.get("value"), str):
            yield IndexValue(name, system=element.get("system") or "", value=element["value"])
    elif isinstance(element, dict):
        codings = element.get("coding") if "coding" in element else [element]
        for coding in _as_list(codings):
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                yield IndexValue(name, system=coding.get("system") or "", value=coding["code"])


def _dates(name: str, element: Any) -> Iterator[IndexValue]:
    try:
        if isinstance(element, str):
            start, end = fhir_range(element)
            yield IndexValue(name, start=start, end=end)
        elif isinstance(element, dict) and (element.get("start") or element.get("end")):
            start = fhir_range(element["start"])[0] if element.get("start") else datetime.min
            end = fhir_range(element["end"])[1] if element.get("end") else datetime.max
            yield IndexValue(name, start=start, end=end)
    except ValueError:
        return  # validated resources only hold valid dates; nothing to index otherwise


def _strip_history(reference: str) -> str:
    head, sep, _ = reference.partition("/_history/")
    return head if sep else reference
