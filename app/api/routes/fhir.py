"""The FHIR R4 REST API (http.html): thin handlers that parse the request, call a service, render."""

from datetime import datetime
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.auth import require
from app.api.deps import DatabaseDep, SettingsDep, prefer, read_fhir_json
from app.api.responses import fhir_response
from app.db.sites import can_see
from app.domain.access import Permission, Principal
from app.fhir.bundle import Entry, EntryOutcome
from app.fhir.capability import capability_statement
from app.fhir.outcome import error, operation_outcome
from app.fhir.resources import is_resource_type, validate_resource
from app.fhir.search import parse_search
from app.services import reads
from app.services.errors import Forbidden
from app.services.ingest import process_bundle, write_one

router = APIRouter(prefix="/fhir", tags=["FHIR"])
# The CapabilityStatement is public: clients read it before they authenticate (SMART App Launch 2.0).
public_router = APIRouter(prefix="/fhir", tags=["FHIR"])

FHIR_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {"schema": {"type": "object", "description": "A FHIR R4 resource"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}
FHIR_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/fhir+json": {"schema": {"type": "object"}}},
        "description": "FHIR resource",
    },
    400: {"description": "OperationOutcome: invalid request or resource"},
    404: {"description": "OperationOutcome: unknown resource or type"},
    412: {"description": "OperationOutcome: version conflict or multiple matches"},
}
TypeParam = Annotated[
    str, Path(description="FHIR resource type, e.g. Observation", pattern=r"^[A-Z][A-Za-z]+$")
]
IdParam = Annotated[str, Path(description="Logical id", pattern=r"^[A-Za-z0-9\-.]{1,64}$")]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _known_type(resource_type: str) -> str:
    if not is_resource_type(resource_type):
        raise error(404, "not-supported", f"Unknown resource type '{resource_type}'")
    return resource_type


def _allowed(request: Request, resource_type: str, permission: Permission) -> Principal:
    """A known type, and a token whose scopes permit the interaction on it."""
    _known_type(resource_type)
    principal: Principal = request.state.principal
    require(principal, resource_type, permission)
    return principal


def _visible(session: Session, resource_type: str, logical_id: str) -> None:
    # Another site's resource is answered as unknown: its existence is not revealed (issue 7).
    if not can_see(session, resource_type, logical_id):
        raise error(404, "not-found", f"{resource_type}/{logical_id} is not known")


@public_router.get("/metadata", summary="CapabilityStatement", responses=FHIR_ANSWER)
def metadata(request: Request) -> Response:
    return fhir_response(capability_statement(_base(request)))


@router.post(
    "", summary="Process a transaction or batch Bundle", openapi_extra=FHIR_BODY, responses=FHIR_ANSWER
)
async def bundle(request: Request, settings: SettingsDep, db: DatabaseDep) -> Response:
    data = await read_fhir_json(request, settings)
    answer = await run_in_threadpool(
        process_bundle,
        db,
        data,
        max_entries=settings.max_bundle_entries,
        retries=settings.write_retries,
        checks=request.app.state.checks,
        prefer=prefer(request).get("return", "minimal"),
        principal=request.state.principal,
    )
    return fhir_response(answer)


@router.post(
    "/{resource_type}",
    summary="Create (If-None-Exist honoured)",
    openapi_extra=FHIR_BODY,
    responses=FHIR_ANSWER,
    status_code=201,
)
async def create(
    resource_type: TypeParam, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    _allowed(request, resource_type, Permission.CREATE)
    data = await read_fhir_json(request, settings)
    validate_resource(data, expected_type=resource_type)
    entry = Entry(
        index=0,
        method="POST",
        resource_type=resource_type,
        resource=data,
        if_none_exist=request.headers.get("if-none-exist"),
    )
    return await _write(request, db, settings, entry)


@router.put(
    "/{resource_type}/{logical_id}",
    summary="Update, or create with this id",
    openapi_extra=FHIR_BODY,
    responses=FHIR_ANSWER,
)
async def update(
    resource_type: TypeParam, logical_id: IdParam, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    _allowed(request, resource_type, Permission.UPDATE)
    data = await read_fhir_json(request, settings)
    validate_resource(data, expected_type=resource_type)
    entry = Entry(
        index=0,
        method="PUT",
        resource_type=resource_type,
        logical_id=logical_id,
        resource=data,
        if_match=request.headers.get("if-match"),
    )
    return await _write(request, db, settings, entry)


@router.put(
    "/{resource_type}",
    summary="Conditional update (e.g. ?identifier=system|value)",
    openapi_extra=FHIR_BODY,
    responses=FHIR_ANSWER,
)
async def conditional_update(
    resource_type: TypeParam, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    _allowed(request, resource_type, Permission.UPDATE)
    query = list(request.query_params.multi_items())
    if not query:
        raise error(
            400, "invalid", "A conditional update needs search parameters, e.g. ?identifier=system|value"
        )
    data = await read_fhir_json(request, settings)
    validate_resource(data, expected_type=resource_type)
    entry = Entry(
        index=0,
        method="PUT",
        resource_type=resource_type,
        query=query,
        resource=data,
        if_match=request.headers.get("if-match"),
    )
    return await _write(request, db, settings, entry)


@router.delete(
    "/{resource_type}/{logical_id}",
    summary="Delete (logical; history kept)",
    responses=FHIR_ANSWER,
    status_code=204,
)
async def delete(
    resource_type: TypeParam, logical_id: IdParam, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    _allowed(request, resource_type, Permission.DELETE)
    entry = Entry(
        index=0,
        method="DELETE",
        resource_type=resource_type,
        logical_id=logical_id,
        if_match=request.headers.get("if-match"),
    )
    return await _write(request, db, settings, entry)


async def _write(request: Request, db: Any, settings: Any, entry: Entry) -> Response:
    outcome: EntryOutcome = await run_in_threadpool(
        write_one,
        db,
        entry,
        retries=settings.write_retries,
        checks=request.app.state.checks,
        principal=request.state.principal,
    )
    headers: dict[str, str] = {}
    if outcome.location:
        headers["Location"] = f"{_base(request)}/{outcome.location}"
    if outcome.etag:
        headers["ETag"] = outcome.etag
    if outcome.last_modified:
        headers["Last-Modified"] = format_datetime(
            datetime.fromisoformat(outcome.last_modified.replace("Z", "+00:00")), usegmt=True
        )
    if outcome.status == 204:
        return Response(status_code=204, headers=headers)
    wanted = prefer(request).get("return", "representation")
    if wanted == "minimal":
        return Response(status_code=outcome.status, headers=headers)
    if wanted == "OperationOutcome":
        return fhir_response(operation_outcome(outcome.issues), status=outcome.status, headers=headers)
    return fhir_response(outcome.resource, status=outcome.status, headers=headers)


@router.get("/{resource_type}", summary="Search", responses=FHIR_ANSWER)
def search(resource_type: TypeParam, request: Request, settings: SettingsDep, db: DatabaseDep) -> Response:
    _allowed(request, resource_type, Permission.SEARCH)
    params = list(request.query_params.multi_items())
    query = parse_search(
        resource_type,
        params,
        lenient=prefer(request).get("handling") == "lenient",
        default_count=settings.page_size_default,
        max_count=settings.page_size_max,
    )
    with db.read() as session:
        return fhir_response(reads.search(session, query, _base(request), params))


@router.get("/{resource_type}/_history", summary="History of a type", responses=FHIR_ANSWER)
def type_history(
    resource_type: TypeParam, request: Request, settings: SettingsDep, db: DatabaseDep
) -> Response:
    if not _allowed(request, resource_type, Permission.SEARCH).all_sites:
        raise Forbidden("The history of a whole type spans every site: it is for the trial office")
    count_text = request.query_params.get("_count", str(settings.page_size_default))
    offset_text = request.query_params.get("_offset", "0")
    if not (count_text.isdigit() and offset_text.isdigit()) or max(len(count_text), len(offset_text)) > 9:
        raise error(400, "value", "_count and _offset must be non-negative integers")
    with db.read() as session:
        return fhir_response(
            reads.type_history(
                session,
                resource_type,
                _base(request),
                count=min(int(count_text), settings.page_size_max),
                offset=int(offset_text),
            )
        )


@router.get("/{resource_type}/{logical_id}", summary="Read", responses=FHIR_ANSWER)
def read(resource_type: TypeParam, logical_id: IdParam, request: Request, db: DatabaseDep) -> Response:
    _allowed(request, resource_type, Permission.READ)
    with db.read() as session:
        _visible(session, resource_type, logical_id)
        found = reads.read(session, resource_type, logical_id)
    return _found(found)


@router.get("/{resource_type}/{logical_id}/_history", summary="History of a resource", responses=FHIR_ANSWER)
def history(resource_type: TypeParam, logical_id: IdParam, request: Request, db: DatabaseDep) -> Response:
    _allowed(request, resource_type, Permission.READ)
    with db.read() as session:
        _visible(session, resource_type, logical_id)
        return fhir_response(reads.history(session, resource_type, logical_id, _base(request)))


@router.get(
    "/{resource_type}/{logical_id}/_history/{version_id}", summary="Read a version", responses=FHIR_ANSWER
)
def vread(
    resource_type: TypeParam, logical_id: IdParam, version_id: str, request: Request, db: DatabaseDep
) -> Response:
    _allowed(request, resource_type, Permission.READ)
    with db.read() as session:
        _visible(session, resource_type, logical_id)
        found = reads.vread(session, resource_type, logical_id, version_id)
    return _found(found)


def _found(found: reads.Found) -> Response:
    moment = datetime.fromisoformat(found.last_updated.replace("Z", "+00:00"))
    return fhir_response(
        found.content,
        headers={
            "ETag": f'W/"{found.version_id}"',
            "Last-Modified": format_datetime(moment, usegmt=True),
        },
    )
