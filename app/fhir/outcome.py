"""OperationOutcome: how every FHIR answer says what went wrong, and where (FHIR R4 operationoutcome.html)."""

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True)
class Issue:
    severity: Severity
    code: str  # IssueType value set: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


@dataclass
class FhirError(Exception):
    """A request (or one bundle entry) that cannot be honoured; `status` is the HTTP answer."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)

    def prefixed(self, prefix: str) -> "FhirError":
        """The same error with every path placed under `prefix` (e.g. `Bundle.entry[2].resource`)."""
        issues = [
            Issue(
                i.severity, i.code, i.diagnostics, tuple(_join(prefix, e) for e in i.expression) or (prefix,)
            )
            for i in self.issues
        ]
        return FhirError(self.status, issues, dict(self.headers))


def _join(prefix: str, expression: str) -> str:
    # Resource paths start with the type name ("Observation.valueQuantity"); under a bundle entry the
    # type is implied by the entry, so FHIRPath reads "Bundle.entry[2].resource.valueQuantity".
    head, _, rest = expression.partition(".")
    if head and head[0].isupper() and rest:
        return f"{prefix}.{rest}"
    if head and head[0].isupper():
        return prefix
    return f"{prefix}.{expression}"


def error(status: int, code: str, diagnostics: str, *expression: str) -> FhirError:
    return FhirError(status, [Issue("error", code, diagnostics, tuple(expression))])


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    if not issues:
        issues = [Issue("information", "informational", "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}
