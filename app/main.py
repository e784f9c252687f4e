"""The application factory: everything the service needs is built here, from one Settings object."""

import logging

from fastapi import Depends, FastAPI

from app.api import audit, auth, errors
from app.api.limits import BodyLimit, RequestTimeout
from app.api.routes import bulk, eligibility, endpoints, export, fhir, health, plots, trial
from app.dashboard import routes as dashboard
from app.db.engine import Database
from app.metrics import HttpMetrics
from app.metrics import router as metrics_router
from app.observability import RequestLog, configure_logging
from app.protocol import load_protocol
from app.services.auth import TokenService, load_clients, server_key
from app.services.checks import protocol_checks
from app.services.writes import ResourceCheck
from app.settings import Settings


def create_app(
    settings: Settings | None = None, *, checks: tuple[ResourceCheck, ...] | None = None
) -> FastAPI:
    """Builds the service; a protocol file that does not validate stops it here, naming the key."""
    settings = settings or Settings()
    protocol = load_protocol(settings.protocol_path)
    if not settings.auth_enabled and settings.environment == "production" and not settings.auth_force_off:
        raise RuntimeError(
            "Authorisation is off in a production environment: set AUTH_ENABLED=true, or "
            "ENVIRONMENT=development for a local demo (or AUTH_FORCE_OFF=true if you really mean it)"
        )
    configure_logging(settings.log_level)
    app = FastAPI(
        title="mrdhub",
        version="0.1.0",
        description=(
            "FHIR R4 service for the MRD data of trial NCT06607419 (blinatumomab for children with B-ALL "
            "and high day-19 MRD). `/fhir` speaks FHIR R4 (JSON); `/api/v1` serves the trial's views."
        ),
    )
    app.state.settings = settings
    app.state.db = Database(
        settings.database_url,
        connect_timeout_s=settings.database_connect_timeout_s,
        statement_timeout_s=settings.request_timeout_s,
    )
    app.state.protocol = protocol
    app.state.checks = protocol_checks(protocol) if checks is None else checks
    app.state.tokens = TokenService(
        clients=load_clients(settings.auth_clients_file),
        key=server_key(settings.auth_key_file),
        issuer=settings.public_base_url or "urn:mrdhub",
    )
    if not settings.auth_enabled:
        logging.getLogger("mrdhub").warning(
            "AUTHORISATION IS OFF: every request acts as the trial office. "
            "Local demo only, never with real data."
        )
    errors.install(app)
    # Middleware added later wraps what was added before. The time limit sits inside the audit (which then
    # records a timed-out request, outside its deadline); the request log is outermost, so every answer,
    # a timeout's included, gets a request id and a log line.
    # A bulk import streams its body to disk and runs as a job: it holds itself to its own limits.
    streamed = (bulk.IMPORT_PATH,)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, exempt=streamed)
    app.add_middleware(
        RequestTimeout,
        timeout_s=settings.request_timeout_s,
        retry_after_s=settings.retry_after_s,
        exempt=streamed,
    )
    audit.install(app)
    app.add_middleware(HttpMetrics)
    app.add_middleware(RequestLog)
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(auth.router)
    app.include_router(fhir.public_router)
    protected = [Depends(auth.current_principal)]
    for router in (
        bulk.router,
        export.router,  # before fhir.router: /fhir/$export is not a resource type
        endpoints.fhir_router,
        fhir.router,
        trial.router,
        eligibility.router,
        endpoints.router,
        plots.router,
    ):
        app.include_router(router, dependencies=protected)
    dashboard.install(app)  # its pages take the API's token from a login cookie too
    return app
