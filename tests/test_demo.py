"""The demo data load through the LIS ingest path, and loading them twice changes nothing clinical."""

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.cli import load_demo
from app.db.tables import ResourceRow, ResourceVersionRow
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "bundles"
TRAIL = ("AuditEvent", "Provenance")


def test_demo_bundles_load_and_reload_idempotently(
    app: object, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(DEMO.glob("*.json"))
    assert load_demo(settings, DEMO) == 0
    db = app.state.db  # type: ignore[attr-defined]
    clinical = (
        select(func.count())
        .select_from(ResourceVersionRow)
        .join(ResourceRow, ResourceRow.pk == ResourceVersionRow.resource_pk)
        .where(ResourceRow.resource_type.not_in(TRAIL))
    )
    with db.read() as session:
        versions = session.scalar(clinical)
        patients = session.scalar(select(func.count()).where(ResourceRow.resource_type == "Patient"))
    assert load_demo(settings, DEMO) == 0
    with db.read() as session:
        assert session.scalar(clinical) == versions
    registrations = {f.name.split("-")[2] for f in files}
    assert patients == len(registrations)
    assert f"{len(files)} of {len(files)} bundles loaded" in capsys.readouterr().out
