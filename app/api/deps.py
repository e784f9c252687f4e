"""Request dependencies: the app's settings and database, and the body read within its limits."""

from typing import Annotated, Any

from fastapi import Depends, Request

from app.db.engine import Database
from app.domain.protocol import Protocol
from app.fhir.outcome import error
from app.fhir.resources import parse_json
from app.settings import Settings

FHIR_MEDIA_TYPES = ("application/fhir+json", "application/json")


# Async on purpose: FastAPI runs a plain `def` dependency in its threadpool, a hand-off that cost more than
# these lookups themselves (bench/README.md, the ingest profile).
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_protocol(request: Request) -> Protocol:
    protocol: Protocol = request.app.state.protocol
    return protocol


SettingsDep = Annotated[Settings, Depends(get_settings)]
ProtocolDep = Annotated[Protocol, Depends(get_protocol)]
DatabaseDep = Annotated[Database, Depends(get_db)]


async def read_fhir_json(request: Request, settings: Settings) -> Any:
    """The JSON body of a FHIR write: right media type, within the size limit, well-formed."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in FHIR_MEDIA_TYPES:
        raise error(
            415, "not-supported", f"Content-Type must be application/fhir+json, not '{media_type or 'none'}'"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise error(
            413, "too-costly", f"Body of {declared} bytes exceeds the limit of {settings.max_body_bytes}"
        )
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > settings.max_body_bytes:
            raise error(413, "too-costly", f"Body exceeds the limit of {settings.max_body_bytes} bytes")
    return parse_json(bytes(body), max_string_chars=settings.max_string_chars)


def prefer(request: Request) -> dict[str, str]:
    """The Prefer header's tokens (RFC 7240): {"return": "minimal", "handling": "lenient"}."""
    found: dict[str, str] = {}
    for part in request.headers.get("prefer", "").split(";"):
        for token in part.split(","):
            key, _, value = token.strip().partition("=")
            if key:
                found[key.lower()] = value.strip('"')
    return found
