"""The naive baseline of issue 8: FHIR transaction ingest as most teams write it first.

    python -m bench.naive_app postgresql+psycopg://...     # the tables, once
    NAIVE_DATABASE_URL=postgresql+psycopg://... uvicorn bench.naive_app:create_app --factory

FastAPI, full fhir.resources (R4B) validation of every entry, and the SQLAlchemy ORM: one row per resource
and one per identifier, each looked up with a SELECT first (conditional creates and re-sent results find
what is there), `urn:uuid:` references rewritten, one commit per bundle. A competent first version, not a
strawman: a sync endpoint in FastAPI's threadpool, a session per request, a pool as large as mrdhub's, a
unique constraint on identifiers and a retry when a concurrent bundle wins the race to it. What it leaves
out, and mrdhub does not: versions and history, search indexes, audit and provenance, site scoping, the
trial's checks. Standalone on purpose: it shares no code with `app/`.
"""

import os
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import Body, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from sqlalchemy import JSON, DateTime, ForeignKey, String, UniqueConstraint, create_engine, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

RETRIES = 3


class Base(DeclarativeBase):
    pass


class Resource(Base):
    __tablename__ = "naive_resource"

    pk: Mapped[int] = mapped_column(primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64), index=True)
    fhir_id: Mapped[str] = mapped_column(String(64), unique=True)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    content: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    identifiers: Mapped[list["Identifier"]] = relationship(back_populates="resource")


class Identifier(Base):
    __tablename__ = "naive_identifier"
    __table_args__ = (UniqueConstraint("resource_type", "system", "value"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    resource_pk: Mapped[int] = mapped_column(ForeignKey("naive_resource.pk"), index=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    system: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
    resource: Mapped[Resource] = relationship(back_populates="identifiers")


def create_schema(url: str) -> None:
    """The tables, once before the workers start (several workers racing through create_all collide)."""
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()


def create_app() -> FastAPI:
    url = os.environ.get("NAIVE_DATABASE_URL", "sqlite:///var/naive.sqlite3")
    # A pool as large as mrdhub's (20 + 20): with the default (5 + 10) a burst of 16 requests opens and closes
    # overflow connections all the time, and the comparison would measure that instead of the ingest.
    engine = create_engine(url, pool_size=20, max_overflow=20)
    Base.metadata.create_all(engine)  # nothing to do when create_schema ran first
    sessions = sessionmaker(engine)
    app = FastAPI(title="naive FHIR ingest")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/fhir")
    def transaction(bundle: dict[str, Any] = Body(...)) -> JSONResponse:  # noqa: B008 (FastAPI's idiom)
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            raise HTTPException(400, "Expected a transaction Bundle")
        entries = bundle.get("entry") or []
        for index, entry in enumerate(entries):
            _validate(index, entry)
        for attempt in range(RETRIES + 1):
            with sessions() as session:
                try:
                    answer = _ingest(session, entries)
                    session.commit()
                    return JSONResponse(answer)
                except IntegrityError:
                    # A concurrent bundle created the same patient first: its row is there now.
                    session.rollback()
                    if attempt == RETRIES:
                        raise HTTPException(409, "Conflict on a business identifier") from None
        raise AssertionError("unreachable")

    return app


def _validate(index: int, entry: dict[str, Any]) -> None:
    resource = entry.get("resource") or {}
    try:
        get_fhir_model_class(resource.get("resourceType", "")).model_validate(resource)
    except (ValidationError, KeyError, ValueError) as exc:
        raise HTTPException(400, f"Bundle.entry[{index}] is not a valid resource: {exc}") from None


def _ingest(session: Session, entries: list[dict[str, Any]]) -> dict[str, Any]:
    aliases: dict[str, str] = {}
    outcomes: list[tuple[str, Resource | None, dict[str, Any]]] = []
    for entry in entries:
        resource = entry["resource"]
        existing = _find(session, entry)
        if existing is not None:
            outcomes.append(("200 OK", existing, resource))
            reference = f"{existing.resource_type}/{existing.fhir_id}"
        else:
            fhir_id = uuid.uuid4().hex
            outcomes.append(("201 Created", None, resource | {"id": fhir_id}))
            reference = f"{resource['resourceType']}/{fhir_id}"
        if entry.get("fullUrl"):
            aliases[entry["fullUrl"]] = reference
    now = datetime.now(UTC)
    response = []
    for status, existing, content in outcomes:
        if existing is None:
            content = _rewrite(content, aliases)
            content["meta"] = {"versionId": "1", "lastUpdated": now.isoformat()}
            row = Resource(
                resource_type=content["resourceType"],
                fhir_id=content["id"],
                last_updated=now,
                content=content,
            )
            session.add(row)
            for identifier in content.get("identifier", []):
                row.identifiers.append(
                    Identifier(
                        resource_type=row.resource_type,
                        system=identifier.get("system", ""),
                        value=identifier.get("value", ""),
                    )
                )
            session.flush()
            existing = row
        response.append(
            {"response": {"status": status, "location": f"{existing.resource_type}/{existing.fhir_id}"}}
        )
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": response}


def _find(session: Session, entry: dict[str, Any]) -> Resource | None:
    """The stored resource with this entry's ifNoneExist identifier, or its own first identifier."""
    resource = entry["resource"]
    condition = (entry.get("request") or {}).get("ifNoneExist")
    if condition and condition.startswith("identifier="):
        system, _, value = condition.removeprefix("identifier=").partition("|")
    elif resource.get("identifier"):
        system, value = (
            resource["identifier"][0].get("system", ""),
            resource["identifier"][0].get("value", ""),
        )
    else:
        return None
    return session.scalars(
        select(Resource)
        .join(Identifier)
        .where(
            Identifier.resource_type == resource["resourceType"],
            Identifier.system == system,
            Identifier.value == value,
        )
    ).first()


def _rewrite(value: Any, aliases: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: aliases.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, aliases)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(v, aliases) for v in value]
    return value


if __name__ == "__main__":
    import sys

    create_schema(sys.argv[1])
