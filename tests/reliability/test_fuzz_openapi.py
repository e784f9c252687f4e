"""Schemathesis against the app's own OpenAPI document: no 5xx, and every answer fits its schema.

Every operation of the committed document (which CI checks is the app's own) gets a bounded number of
generated requests, valid and invalid ones mixed, sent in-process. POST /cds-services/{service_id} is left
out: a generated `fhirServer` would make the app call out to whatever host the generator wrote. The store
holds one LIS report, so reads and the trial's views have something to work on.
"""

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import FHIR_JSON, TokenFactory

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("MRDHUB_FUZZ_EXAMPLES", "20"))
DOCUMENT = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
OFF_LIMITS = {("POST", "/cds-services/{service_id}")}
SEED = (Path(__file__).resolve().parents[1] / "data" / "lis_report.json").read_bytes()
RESOURCE_TYPES = (
    "Patient",
    "Observation",
    "Specimen",
    "DiagnosticReport",
    "MedicationAdministration",
    "Bogus",
)
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
OPERATIONS = [
    (method.upper(), path)
    for path, methods in json.loads(DOCUMENT.read_text(encoding="utf-8"))["paths"].items()
    for method in methods
    if (method.upper(), path) not in OFF_LIMITS
]


@pytest.fixture
async def bearer(app: Any, token_for: TokenFactory, anyio_backend: str) -> str:
    """The trial office's token, after it stored one LIS report."""
    token = f"Bearer {await token_for()}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mrdhub.test") as client:
        seeded = await client.post("/fhir", content=SEED, headers={"Authorization": token} | FHIR_JSON)
    assert seeded.status_code == 200, seeded.text
    return token


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx_or_breaks_its_schema(app: Any, bearer: str, method: str, path: str) -> None:
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)[path][method]
    headers = {"Authorization": bearer}
    # A generated type name is almost never a FHIR type (404): most requests name one of the trial's.
    types: list[dict[str, str] | None] = (
        [{"resource_type": t} for t in RESOURCE_TYPES] if "{resource_type}" in path else [None]
    )
    cases = st.one_of(
        *(
            operation.as_strategy(mode, headers=headers, path_parameters=fixed)
            for fixed in types
            for mode in MODES
        )
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_well(case: Any) -> None:
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    answers_well()
