"""SMART Backend Services authorisation: registered clients, the token endpoint, and access tokens.

Clients authenticate with a `private_key_jwt` client assertion (RS384 or ES384) signed by a key registered
in their JWKS; the server answers a short-lived access token signed by its own key, carrying the granted
scopes and the client's site (hl7.org/fhir/smart-app-launch/backend-services.html). PyJWT does the crypto.
"""

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.db.auth import claim_assertion
from app.db.engine import Database
from app.domain.access import Principal, Scope, ScopeError, grant, parse_scopes

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ALGORITHMS = ["RS384", "ES384"]
SERVER_ALGORITHM = "ES384"
MAX_ASSERTION_LIFETIME = dt.timedelta(minutes=5)
TOKEN_LIFETIME = dt.timedelta(minutes=5)


class AuthError(Exception):
    """An OAuth error answer (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True)
class RegisteredClient:
    client_id: str
    scopes: tuple[Scope, ...]
    site: str | None
    jwks: dict[str, Any]


def load_clients(path: Path | None) -> dict[str, RegisteredClient]:
    """Clients from a JSON file: [{"client_id", "scopes": "system/*.rs ...", "site": code | null, "jwks"}]."""
    if path is None or not path.exists():
        return {}
    clients = {}
    for item in json.loads(path.read_text(encoding="utf-8")):
        clients[item["client_id"]] = RegisteredClient(
            item["client_id"], parse_scopes(item["scopes"]), item.get("site"), item["jwks"]
        )
    return clients


def register_client(
    path: Path, *, client_id: str, scopes: str, site: str | None, jwks: dict[str, Any]
) -> None:
    parse_scopes(scopes)
    existing = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    existing = [c for c in existing if c["client_id"] != client_id]
    existing.append({"client_id": client_id, "scopes": scopes, "site": site, "jwks": jwks})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")


def server_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The key that signs access tokens; created once (mode 0600) when the file does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP384R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker made it first
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return loaded


class TokenService:
    def __init__(
        self, *, clients: dict[str, RegisteredClient], key: ec.EllipticCurvePrivateKey, issuer: str
    ) -> None:
        self.clients, self.key, self.issuer = clients, key, issuer

    def issue(self, db: Database, *, form: dict[str, str], token_url: str) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise AuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise AuthError("invalid_client", f"client_assertion_type must be {ASSERTION_TYPE}", 401)
        assertion = form.get("client_assertion", "")
        client = self._client_of(assertion)
        claims = self._verify_assertion(assertion, client, token_url)
        now = dt.datetime.now(dt.UTC)
        expires = dt.datetime.fromtimestamp(claims["exp"], dt.UTC).replace(tzinfo=None)
        with db.transaction() as session:
            fresh = claim_assertion(
                session,
                jti=str(claims["jti"]),
                client_id=client.client_id,
                expires_at=expires,
                now=now.replace(tzinfo=None),
            )
        if not fresh:
            raise AuthError("invalid_client", "client assertion jti was already used", 401)
        try:
            requested = parse_scopes(form.get("scope", ""))
        except ScopeError as exc:
            raise AuthError("invalid_scope", str(exc)) from None
        granted = grant(requested, client.scopes)
        if not granted:
            raise AuthError("invalid_scope", "none of the requested scopes is registered for this client")
        scope = " ".join(str(s) for s in granted)
        token = jwt.encode(
            {
                "iss": self.issuer,
                "sub": client.client_id,
                "aud": self.issuer,
                "iat": now,
                "exp": now + TOKEN_LIFETIME,
                "jti": uuid.uuid4().hex,
                "scope": scope,
                "site": client.site,
            },
            self.key,
            algorithm=SERVER_ALGORITHM,
        )
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": int(TOKEN_LIFETIME.total_seconds()),
            "scope": scope,
        }

    def _client_of(self, assertion: str) -> RegisteredClient:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("invalid_client", "client_assertion is not a JWT", 401) from None
        client = self.clients.get(str(unverified.get("iss")))
        if client is None or unverified.get("sub") != unverified.get("iss"):
            raise AuthError(
                "invalid_client", "unknown client (iss and sub must be a registered client_id)", 401
            )
        return client

    def _verify_assertion(self, assertion: str, client: RegisteredClient, token_url: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(assertion)
            if header.get("alg") not in CLIENT_ALGORITHMS:
                raise AuthError("invalid_client", f"alg must be one of {', '.join(CLIENT_ALGORITHMS)}", 401)
            key = _client_key(client, header.get("kid"), header["alg"])
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key,
                algorithms=[header["alg"]],
                audience=token_url,
                issuer=client.client_id,
                options={"require": ["exp", "jti", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_client", f"client assertion rejected: {exc}", 401) from None
        lifetime = dt.datetime.fromtimestamp(claims["exp"], dt.UTC) - dt.datetime.now(dt.UTC)
        if lifetime > MAX_ASSERTION_LIFETIME + dt.timedelta(seconds=30):
            raise AuthError("invalid_client", "client assertion exp is more than 5 minutes ahead", 401)
        return claims

    def verify(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self.key.public_key(),
                algorithms=[SERVER_ALGORITHM],
                audience=self.issuer,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "scope"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", str(exc), 401) from None
        return Principal(str(claims["sub"]), parse_scopes(str(claims["scope"])), claims.get("site"))


def _client_key(client: RegisteredClient, kid: str | None, alg: str) -> Any:
    keys = client.jwks.get("keys", [])
    for candidate in keys:
        if kid is None or candidate.get("kid") == kid:
            return jwt.PyJWK(candidate, algorithm=alg).key
    raise AuthError("invalid_client", f"no registered key with kid {kid!r}", 401)
