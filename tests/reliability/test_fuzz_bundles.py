"""Mutated FHIR bundles (wrong types, missing elements, huge numbers, odd Unicode, deep nesting, duplicated
entries) POSTed to /fhir: always 200 or a 4xx OperationOutcome, never a 5xx, and a rejected bundle leaves
every table as it was."""

import copy
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import lab_report
from tests.conftest import FHIR_JSON
from tests.reliability.conftest import stored_rows

pytestmark = [pytest.mark.anyio, pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("MRDHUB_FUZZ_EXAMPLES", "20")) * 10
LIS_REPORT = json.loads((Path(__file__).resolve().parents[1] / "data" / "lis_report.json").read_text("utf-8"))
BASES = (LIS_REPORT, LIS_REPORT | {"type": "batch"}, lab_report("MRN-FUZZ", "ACC-FUZZ"))

ODD_STRINGS = (
    "",
    " ",
    "\x00",
    "\x1b[31m",
    "\ud800",
    "\udfff",
    "\u202eevil",
    "e\u0301\u0301\u0301",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "\U0001f9ec",
    "张小明",
    "\U0001d518\U0001d52b\U0001d526",  # mathematical Fraktur
    "x" * 300,
    "Patient/../../etc",
    "urn:uuid:not-a-uuid",
    "' OR 1=1 --",
    "2025-02-30",
    "2025-03-19T09:30:00",
)
HUGE_NUMBERS = (10**30, -(10**30), 2**63, -(2**63) - 1, 1e308, -1e308, 5e-324, 10**400, float("nan"))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(HUGE_NUMBERS),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def locations(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the JSON tree, as a path of keys and indexes."""
    found = [at] if at else []
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(locations(child, (*at, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(locations(child, (*at, index)))
    return found


def parent_of(data: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        data = data[step]
    return data


@st.composite
def mutated_bundles(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        places = locations(data)
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent, key = parent_of(data, path), path[-1]
        mutation = draw(st.sampled_from(("delete", "replace", "huge", "odd", "nest", "duplicate")))
        if mutation == "delete":
            del parent[key]
        elif mutation == "replace":
            parent[key] = draw(VALUES)
        elif mutation == "huge":
            parent[key] = draw(st.sampled_from(HUGE_NUMBERS))
        elif mutation == "odd":
            original = parent[key]
            odd = draw(st.sampled_from(ODD_STRINGS) | st.text(min_size=1, max_size=10))
            parent[key] = original + odd if isinstance(original, str) else odd
        elif mutation == "nest":
            nested = parent[key]
            for _ in range(draw(st.integers(1, 80))):
                nested = draw(st.sampled_from(({"extension": nested}, [nested])))
            parent[key] = nested
        elif isinstance(data.get("entry"), list) and data["entry"]:
            data["entry"].append(copy.deepcopy(draw(st.sampled_from(data["entry"]))))
    return data


async def test_mutated_bundles_are_answered_200_or_4xx_and_never_written_in_part(
    app: Any, client: httpx.AsyncClient
) -> None:
    engine = app.state.db.engine
    # A 500 comes back as an answer, not as the app's exception raised in the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    tolerant = httpx.AsyncClient(transport=transport, base_url=str(client.base_url), headers=client.headers)

    def post(body: bytes) -> httpx.Response:
        answer: httpx.Response = anyio.from_thread.run(
            partial(tolerant.post, "/fhir", content=body, headers=FHIR_JSON)
        )
        return answer

    @given(bundle=mutated_bundles())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answered_whole(bundle: Any) -> None:
        body = json.dumps(bundle, ensure_ascii=True).encode()
        before = stored_rows(engine)
        answer = post(body)
        assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text
        if answer.status_code != 200:
            assert answer.json()["resourceType"] == "OperationOutcome", answer.text
            assert stored_rows(engine) == before, "a rejected bundle was written in part"
            return
        reply = answer.json()
        assert reply["type"] in ("transaction-response", "batch-response")
        statuses = [int(e["response"]["status"].split()[0]) for e in reply["entry"]]
        assert all(s < 500 for s in statuses), answer.text

    async with tolerant:
        await anyio.to_thread.run_sync(answered_whole)
