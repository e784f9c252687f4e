"""The `mrdhub` command line on a real database: migrate, import demo bundles, summarise, plot."""

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from app.mrdhub_cli import cli
from app.settings import ROOT

DEMO = ROOT / "demo" / "bundles"
# Patient S000001 up to day 46, patient F000002 up to enrolment: registration, induction, MRD results.
FEW = [p.name for p in sorted(DEMO.glob("00000[12]-0[0-3]-*.json"))]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}", "COLUMNS": "200"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def loaded(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> Path:
    folder = tmp_path / "bundles"
    folder.mkdir()
    for name in FEW:
        shutil.copy(DEMO / name, folder / name)
    migrated = runner.invoke(cli, ["migrate"], env=env)
    assert migrated.exit_code == 0, migrated.output
    assert "migrated" in migrated.output
    return folder


def test_import_accepts_demo_bundles_and_summarises(
    runner: CliRunner, env: dict[str, str], loaded: Path
) -> None:
    result = runner.invoke(cli, ["import", str(loaded)], env=env)
    assert result.exit_code == 0, result.output
    assert f"accepted {len(FEW)} bundle(s)" in result.stdout
    assert "rejected 0" in result.stdout
    assert "bundles/s" in result.stderr  # the progress bar's rate


def test_importing_again_changes_nothing_and_is_accepted(
    runner: CliRunner, env: dict[str, str], loaded: Path
) -> None:
    first = runner.invoke(cli, ["import", str(loaded / FEW[0])], env=env)
    again = runner.invoke(cli, ["import", str(loaded / FEW[0])], env=env)
    assert (first.exit_code, again.exit_code) == (0, 0)
    assert "accepted 1 bundle(s)" in again.stdout


def test_a_missing_file_is_a_usage_error(runner: CliRunner, env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(cli, ["import", str(tmp_path / "nothing.json")], env=env)
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_a_bad_bundle_is_rejected_with_its_reason(
    runner: CliRunner, env: dict[str, str], loaded: Path
) -> None:
    (loaded / "zz-collection.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection"}))
    (loaded / "zz-truncated.json").write_text('{"resourceType": "Bund')
    result = runner.invoke(cli, ["import", str(loaded)], env=env)
    assert result.exit_code == 1
    assert f"accepted {len(FEW)} bundle(s)" in result.stdout
    assert "rejected 2" in result.stdout
    assert "zz-truncated.json" in result.stdout
    assert "not JSON" in result.stdout
    assert "zz-collection.json" in result.stdout
    assert "400" in result.stdout


def test_an_unmigrated_database_says_so(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(cli, ["summary"], env=env)
    assert result.exit_code == 3
    assert "not migrated" in result.stderr


def test_an_unreachable_database_says_so(runner: CliRunner, tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql+psycopg://mrdhub@127.0.0.1:1/mrdhub", "COLUMNS": "200"}
    result = runner.invoke(cli, ["import", str(DEMO / FEW[0])], env=env)
    assert result.exit_code == 3
    assert "database unreachable" in result.stderr


def test_summary_prints_the_endpoint_tables(runner: CliRunner, env: dict[str, str], loaded: Path) -> None:
    assert runner.invoke(cli, ["import", str(loaded)], env=env).exit_code == 0
    result = runner.invoke(cli, ["summary", "--as-of", "2030-01-01"], env=env)
    assert result.exit_code == 0, result.output
    for title in ("Primary endpoint, flow", "Primary endpoint, ngs", "Event-free survival", "CONSORT"):
        assert title in result.stdout
    assert "screened" in result.stdout
    bad = runner.invoke(cli, ["summary", "--as-of", "soon"], env=env)
    assert bad.exit_code == 2
    assert "as_of" in bad.stderr


@pytest.mark.parametrize(("name", "suffix"), [("km", "svg"), ("consort", "png")])
def test_plot_writes_the_figure(
    runner: CliRunner, env: dict[str, str], loaded: Path, tmp_path: Path, name: str, suffix: str
) -> None:
    assert runner.invoke(cli, ["import", str(loaded)], env=env).exit_code == 0
    target = tmp_path / f"{name}.{suffix}"
    result = runner.invoke(cli, ["plot", name, "-o", str(target), "--as-of", "2030-01-01"], env=env)
    assert result.exit_code == 0, result.output
    image = target.read_bytes()
    if suffix == "png":
        assert image.startswith(b"\x89PNG")
    else:
        ElementTree.fromstring(image)


def test_plot_refuses_an_unknown_figure_or_file_type(
    runner: CliRunner, env: dict[str, str], tmp_path: Path
) -> None:
    assert runner.invoke(cli, ["plot", "pie", "-o", str(tmp_path / "x.png")], env=env).exit_code == 2
    wrong = runner.invoke(cli, ["plot", "km", "-o", str(tmp_path / "x.pdf")], env=env)
    assert wrong.exit_code == 2
    assert ".png or .svg" in wrong.stderr


def test_export_writes_one_ndjson_per_type_and_import_reads_them_back(
    runner: CliRunner, env: dict[str, str], loaded: Path, tmp_path: Path
) -> None:
    assert runner.invoke(cli, ["import", str(loaded)], env=env).exit_code == 0
    folder = tmp_path / "export"
    result = runner.invoke(cli, ["export", "-o", str(folder)], env=env)
    assert result.exit_code == 0, result.output
    assert "resources/s" in result.stderr  # the progress bar's rate
    written = {f.stem: f.read_text().splitlines() for f in folder.glob("*.ndjson")}
    assert {"Patient", "Observation", "Organization"} <= set(written)
    assert "AuditEvent" not in written and "Provenance" not in written
    assert len(written["Patient"]) == 2
    assert f"exported {sum(len(v) for v in written.values())} resource(s)" in result.stdout

    only = runner.invoke(cli, ["export", "--type", "Patient", "-o", str(tmp_path / "patients")], env=env)
    assert only.exit_code == 0, only.output
    assert [f.name for f in (tmp_path / "patients").iterdir()] == ["Patient.ndjson"]

    again = runner.invoke(cli, ["import", str(folder)], env=env)
    assert again.exit_code == 0, again.output
    total = sum(len(v) for v in written.values())
    assert f"resources: accepted {total} (0 created, 0 updated), rejected 0" in again.stdout


def test_export_import_into_an_empty_database_gives_the_same_resources(
    runner: CliRunner, env: dict[str, str], loaded: Path, tmp_path: Path
) -> None:
    assert runner.invoke(cli, ["import", str(loaded)], env=env).exit_code == 0
    assert runner.invoke(cli, ["export", "-o", str(tmp_path / "one")], env=env).exit_code == 0
    empty = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"}
    assert runner.invoke(cli, ["migrate"], env=empty).exit_code == 0
    imported = runner.invoke(cli, ["import", str(tmp_path / "one")], env=empty)
    assert imported.exit_code == 0, imported.output
    assert runner.invoke(cli, ["export", "-o", str(tmp_path / "two")], env=empty).exit_code == 0

    def resources(folder: Path) -> dict[str, list[dict[str, object]]]:
        found = {}
        for file in sorted(folder.glob("*.ndjson")):
            rows = [json.loads(line) for line in file.read_text().splitlines()]
            for row in rows:
                row.pop("meta", None)
            found[file.stem] = sorted(rows, key=lambda r: str(r["id"]))  # lines put aside land later
        return found

    assert resources(tmp_path / "two") == resources(tmp_path / "one")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--type", "Nonsense"], "--type"), (["--since", "yesterday"], "--since")],
)
def test_export_refuses_bad_options(
    runner: CliRunner, env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(cli, ["export", "-o", str(tmp_path / "x"), *args], env=env)
    assert result.exit_code == 2
    assert message in result.stderr


def test_export_says_when_the_database_is_unreachable(runner: CliRunner, tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql+psycopg://mrdhub@127.0.0.1:1/mrdhub", "COLUMNS": "200"}
    result = runner.invoke(cli, ["export", "-o", str(tmp_path / "x")], env=env)
    assert result.exit_code == 3
    assert "database unreachable" in result.stderr


def test_warm_rebuilds_the_derived_rows_of_every_patient(
    runner: CliRunner, env: dict[str, str], loaded: Path
) -> None:
    imported = runner.invoke(cli, ["import", str(loaded)], env=env)
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(cli, ["warm"], env=env)
    assert result.exit_code == 0, result.output
    assert "derived rows current for 2 patients" in result.output


def test_warm_on_an_unmigrated_database_says_so(runner: CliRunner, env: dict[str, str]) -> None:
    result = runner.invoke(cli, ["warm"], env=env)
    assert result.exit_code == 3
    assert "not migrated" in result.output
