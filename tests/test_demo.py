"""The demo data load through the LIS ingest path, and loading them twice changes nothing."""

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.cli import load_demo
from app.db.tables import ResourceRow, ResourceVersionRow
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_demo_bundles_load_and_reload_idempotently(
    app: object, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_demo(settings, ROOT / "demo" / "bundles") == 0
    db = app.state.db  # type: ignore[attr-defined]
    with db.read() as session:
        versions = session.scalar(select(func.count()).select_from(ResourceVersionRow))
        patients = session.scalar(select(func.count()).where(ResourceRow.resource_type == "Patient"))
    assert load_demo(settings, ROOT / "demo" / "bundles") == 0
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(ResourceVersionRow)) == versions
    assert patients == 8
    assert "16 of 16 bundles loaded" in capsys.readouterr().out
