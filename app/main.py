"""The application factory: everything the service needs is built here, from one Settings object."""

import logging

from fastapi import FastAPI

from app.api import errors
from app.api.routes import eligibility, endpoints, fhir, health, trial
from app.db.engine import Database
from app.protocol import load_protocol
from app.services.checks import protocol_checks
from app.services.writes import ResourceCheck
from app.settings import Settings


def create_app(
    settings: Settings | None = None, *, checks: tuple[ResourceCheck, ...] | None = None
) -> FastAPI:
    """Builds the service; a protocol file that does not validate stops it here, naming the key."""
    settings = settings or Settings()
    protocol = load_protocol(settings.protocol_path)
    logging.basicConfig(level=settings.log_level)
    app = FastAPI(
        title="mrdhub",
        version="0.1.0",
        description=(
            "FHIR R4 service for the MRD data of trial NCT06607419 (blinatumomab for children with B-ALL "
            "and high day-19 MRD). `/fhir` speaks FHIR R4 (JSON); `/api/v1` serves the trial's views."
        ),
    )
    app.state.settings = settings
    app.state.db = Database(settings.database_url)
    app.state.protocol = protocol
    app.state.checks = protocol_checks(protocol) if checks is None else checks
    errors.install(app)
    app.include_router(health.router)
    app.include_router(endpoints.fhir_router)
    app.include_router(fhir.router)
    app.include_router(trial.router)
    app.include_router(eligibility.router)
    app.include_router(endpoints.router)
    return app
