"""Who may do what: SMART App Launch v2 scopes (`system/Observation.rs`, `system/*.cruds`) and site scoping.

A scope names a resource type (or `*`) and the interactions it permits: c(reate), r(ead), u(pdate),
d(elete), s(earch) (hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html). SMART v1 suffixes
`.read` and `.write` are read as `rs` and `cud`.
"""

from dataclasses import dataclass
from enum import StrEnum

TRAIL_TYPES = frozenset({"AuditEvent", "Provenance"})


class Permission(StrEnum):
    CREATE = "c"
    READ = "r"
    UPDATE = "u"
    DELETE = "d"
    SEARCH = "s"


V1 = {"read": "rs", "write": "cud", "*": "cruds"}
ORDER = "cruds"


class ScopeError(ValueError):
    """A scope string that is not a SMART system scope."""


@dataclass(frozen=True, slots=True)
class Scope:
    resource_type: str  # "*" for every type
    permissions: frozenset[Permission]

    @classmethod
    def parse(cls, text: str) -> "Scope":
        context, _, rest = text.partition("/")
        resource_type, _, actions = rest.partition(".")
        if context != "system" or not resource_type or not actions:
            raise ScopeError(f"not a SMART system scope: {text!r}")
        letters = V1.get(actions, actions)
        if any(letter not in ORDER for letter in letters) or list(letters) != sorted(
            letters, key=ORDER.index
        ):
            raise ScopeError(f"permissions must be a subset of 'cruds' in that order: {text!r}")
        return cls(resource_type, frozenset(Permission(letter) for letter in letters))

    def allows(self, resource_type: str, permission: Permission) -> bool:
        return self.resource_type in ("*", resource_type) and permission in self.permissions

    def __str__(self) -> str:
        letters = "".join(p for p in ORDER if Permission(p) in self.permissions)
        return f"system/{self.resource_type}.{letters}"


def parse_scopes(text: str) -> tuple[Scope, ...]:
    return tuple(Scope.parse(part) for part in text.split())


def grant(requested: tuple[Scope, ...], registered: tuple[Scope, ...]) -> tuple[Scope, ...]:
    """The part of each requested scope that the client's registration covers (a server may grant less)."""
    granted: list[Scope] = []
    for wanted in requested:
        allowed = frozenset(
            p
            for p in wanted.permissions
            if any(r.resource_type in ("*", wanted.resource_type) and p in r.permissions for r in registered)
        )
        if allowed:
            granted.append(Scope(wanted.resource_type, allowed))
    return tuple(granted)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client: its scopes, and its site (None: every site, as for the trial office)."""

    client_id: str
    scopes: tuple[Scope, ...]
    site: str | None

    def may(self, resource_type: str, permission: Permission) -> bool:
        if resource_type in TRAIL_TYPES:
            # The audit trail is written by the server alone and read by the trial office alone.
            readable = permission in (Permission.READ, Permission.SEARCH) and self.all_sites
            return readable and any(s.allows(resource_type, permission) for s in self.scopes)
        return any(s.allows(resource_type, permission) for s in self.scopes)

    @property
    def all_sites(self) -> bool:
        return self.site is None
