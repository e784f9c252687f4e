"""Liveness and readiness probes."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import DatabaseDep
from app.db.migrations import migration_state

router = APIRouter(tags=["Operations"])


@router.get("/healthz", summary="The process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database is reachable and migrated to head")
def readyz(request: Request, db: DatabaseDep) -> JSONResponse:
    state = migration_state(db.engine)
    ready = state.reachable and state.current == state.head
    body: dict[str, object] = {
        "status": "ready" if ready else "not-ready",
        "database": "reachable" if state.reachable else "unreachable",
        "migration": {"current": state.current, "head": state.head},
    }
    if not request.app.state.settings.auth_enabled:
        body["authorisation"] = "OFF: local demo only, every request acts as the trial office"
    return JSONResponse(body, status_code=200 if ready else 503)
