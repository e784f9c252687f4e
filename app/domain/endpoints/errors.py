"""Errors of the endpoint analyses; all are bad inputs, so they subclass ValueError.

Callers that map domain errors to HTTP catch EndpointError; each subclass carries what a user needs to fix
the data (the resource references), not just a message.
"""

from collections.abc import Iterable


class EndpointError(ValueError):
    """An endpoint analysis cannot be computed from these inputs."""


class UnknownAnalysisSet(EndpointError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(
            f"analysis set {name!r} is not in the protocol file (known: {', '.join(self.known)})"
        )


class AnalysisSetNeedsAssay(EndpointError):
    """A set that requires an evaluable primary result (per-protocol) is defined per assay."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"analysis set {name!r} requires an evaluable primary result: name the assay")


class CostDataError(EndpointError):
    """Costs that cannot be summed (PROTOCOL.md section 5: "missing currency or mixed currencies are an
    error, not a sum"); `references` names every offending resource version, sorted."""

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems = tuple(sorted(problems))
        self.references = tuple(reference for reference, _ in self.problems)
        listed = "; ".join(f"{reference}: {problem}" for reference, problem in self.problems)
        super().__init__(f"costs cannot be summed: {listed}")


class NoBaselineTimepoint(EndpointError):
    """The MRD response pairs a timepoint before treatment with the primary one; this protocol names none."""

    def __init__(self, protocol_version: str) -> None:
        super().__init__(
            f"protocol {protocol_version} names no [primary].baseline_timepoint: there is no MRD response"
        )


class ScreeningInputError(EndpointError):
    """A screening outcome that is not "eligible", "ineligible" or "incomplete"."""
