"""Promises about the project itself: the OpenAPI document is in step, the domain stays pure."""

import ast
from pathlib import Path

from app.openapi import document

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_DOMAIN = (
    "fastapi",
    "sqlalchemy",
    "pydantic",
    "fhir",
    "httpx",
    "starlette",
    "alembic",
    "app.db",
    "app.api",
    "app.services",
    "app.fhir",
)


def test_committed_openapi_document_matches_the_app() -> None:
    committed = (ROOT / "openapi" / "openapi.json").read_text(encoding="utf-8")
    assert committed == document(), "openapi/openapi.json is stale: run `make openapi`"


def test_the_domain_core_imports_no_framework() -> None:
    offenders: list[str] = []
    for path in sorted((ROOT / "app" / "domain").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_DOMAIN)
            ]
    assert offenders == []
