"""The operators' command line (issue 9): `mrdhub serve | migrate | import | summary | plot`.

Exit codes: 0 done; 1 some bundles rejected; 2 usage (a missing file, a bad option); 3 database unreachable
or not migrated. Configuration comes from the environment like the service's (DATABASE_URL, ...).
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from app.db.engine import Database
from app.fhir.outcome import FhirError
from app.services.ingest import process_bundle
from app.settings import Settings

EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3

cli = typer.Typer(
    name="mrdhub",
    help="mrdhub, the data service of trial NCT06607419: serve, migrate, import, summarise, plot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="Data cut-off: a day (2025-12-31) or an instant with offset")
]
AnalysisSetOption = Annotated[str, typer.Option("--analysis-set", help="full or per-protocol")]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _database(settings: Settings) -> Database:
    """A connected, migrated database, or exit 3 saying which it is not."""
    db = Database(settings.database_url, connect_timeout_s=settings.database_connect_timeout_s)
    try:
        migrated = inspect(db.engine).has_table("alembic_version")
    except DBAPIError as exc:
        db.dispose()
        raise _fail(f"database unreachable ({_where(settings)}): {exc.orig}", EXIT_DATABASE) from None
    if not migrated:
        db.dispose()
        raise _fail(f"database not migrated ({_where(settings)}): run `mrdhub migrate`", EXIT_DATABASE)
    return db


def _where(settings: Settings) -> str:
    """The database URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
) -> None:
    """Serve the API (uvicorn) with the settings from the environment."""
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port)


@cli.command()
def migrate() -> None:
    """Upgrade the database to the latest schema (Alembic)."""
    from app.db.migrations import upgrade

    settings = Settings()
    try:
        upgrade(settings.database_url)
    except DBAPIError as exc:
        raise _fail(f"database unreachable ({_where(settings)}): {exc.orig}", EXIT_DATABASE) from None
    out.print(f"database migrated to head ({_where(settings)})")


class RateColumn(ProgressColumn):
    """Bundles per second (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "-- bundles/s" if speed is None else f"{speed:.1f} bundles/s", style="progress.data.speed"
        )


@dataclass
class ImportReport:
    accepted: int = 0
    entries: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (bundle, reason)


def _bundles(path: Path) -> Iterator[tuple[str, Any]]:
    """(name, parsed JSON or the parse error) for a .json bundle, or each line of an .ndjson file."""
    files = sorted([*path.glob("*.json"), *path.glob("*.ndjson")]) if path.is_dir() else [path]
    for file in files:
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".ndjson":
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    yield f"{file.name}:{number}", _parse(line)
        else:
            yield file.name, _parse(text)


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return exc


def _count(path: Path) -> int:
    if not path.is_dir():
        return 1 if path.suffix != ".ndjson" else sum(1 for x in path.read_text().splitlines() if x.strip())
    return sum(1 for _ in _bundles(path))


@cli.command("import")
def import_(
    path: Annotated[
        Path,
        typer.Argument(exists=True, readable=True, help="A transaction bundle (.json), NDJSON, or a folder"),
    ],
) -> None:
    """Ingest FHIR transaction bundles through the same path a LIS uses; re-importing changes nothing."""
    settings = Settings()
    db = _database(settings)
    report = ImportReport()
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("importing", total=_count(path))
            for name, data in _bundles(path):
                reason = _ingest(db, settings, data, report)
                if reason:
                    report.rejected.append((name, reason))
                progress.advance(task)
    except DBAPIError as exc:
        raise _fail(f"database unreachable ({_where(settings)}): {exc.orig}", EXIT_DATABASE) from None
    finally:
        db.dispose()
    out.print(
        f"accepted {report.accepted} bundle(s) ({report.entries} entries), rejected {len(report.rejected)}"
    )
    if report.rejected:
        table = Table("bundle", "reason", title="Rejected", title_justify="left")
        for name, reason in report.rejected:
            table.add_row(name, reason)
        out.print(table)
        raise typer.Exit(EXIT_REJECTED)


def _ingest(db: Database, settings: Settings, data: Any, report: ImportReport) -> str | None:
    """None when the bundle was accepted, else why not."""
    if isinstance(data, json.JSONDecodeError):
        return f"not JSON: {data}"
    try:
        answer = process_bundle(
            db,
            data,
            max_entries=settings.max_bundle_entries,
            retries=settings.write_retries,
            checks=(),
            prefer="minimal",
        )
    except FhirError as exc:
        return f"{exc.status}: {exc}"
    report.accepted += 1
    report.entries += len(answer["entry"])
    return None


def _load(settings: Settings) -> tuple[Database, Any]:
    from app.protocol import load_protocol

    return _database(settings), load_protocol(settings.protocol_path)


def _as_of(text: str | None) -> Any:
    from app.services.endpoints import parse_as_of
    from app.services.errors import InvalidInput

    try:
        return parse_as_of(text)
    except InvalidInput as exc:
        raise _fail(exc.detail, EXIT_USAGE) from None


def _rate_row(name: str, line: dict[str, Any]) -> list[str]:
    band = line.get("ci95")
    rate = "-" if line.get("rate") is None else f"{line['rate']:.3f}"
    ci = "-" if not band else f"{band[0]:.3f}-{band[1]:.3f}"
    p = line.get("p_value_one_sided")
    return [name, f"{line['n_negative']}/{line['n']}", rate, ci, "-" if p is None else f"{p:.4f}"]


@cli.command()
def summary(as_of: AsOfOption = None, analysis_set: AnalysisSetOption = "full") -> None:
    """The primary endpoint (flow and NGS), EFS and the CONSORT flow as terminal tables."""
    from app.services import endpoints
    from app.services.errors import InvalidInput

    settings = Settings()
    cut_off = _as_of(as_of)
    db, protocol = _load(settings)
    try:
        for assay in ("flow", "ngs"):
            answer = endpoints.primary(
                db, protocol, assay=assay, analysis_set=analysis_set, as_of=cut_off, explain=False
            )
            overall = answer["overall"]
            table = Table(
                "group",
                "negative/n",
                "rate",
                "95 % CI",
                "p (one-sided)",
                title=f"Primary endpoint, {assay} at {answer['timepoint']} "
                f"({answer['analysis_set']['label']}, cut-off {answer['as_of']}); "
                f"p0 {overall['p0']} ({overall['p0_source']})",
                title_justify="left",
            )
            table.add_row(*_rate_row("overall", overall))
            for name, line in answer["by_stratum"].items():
                table.add_row(*_rate_row(f"stratum {name}", line))
            for name, line in sorted(answer["by_site"].items()):
                table.add_row(*_rate_row(f"site {name}", line))
            out.print(table)
        efs = endpoints.secondary(
            db, protocol, "efs", analysis_set=analysis_set, assay=None, as_of=cut_off, explain=False
        )
        out.print(_efs_table(efs))
        out.print(_consort_table(endpoints.consort(db, protocol, as_of=cut_off, explain=False)))
    except InvalidInput as exc:
        raise _fail(exc.detail, EXIT_USAGE) from None
    except DBAPIError as exc:
        raise _fail(f"database unreachable ({_where(settings)}): {exc.orig}", EXIT_DATABASE) from None
    finally:
        db.dispose()


def _efs_table(efs: dict[str, Any]) -> Table:
    test = efs["log_rank"]
    p = "-" if test.get("p_value") is None else f"{test['p_value']:.4f}"
    table = Table(
        "arm",
        "n",
        "events",
        f"{efs['horizon_years']}-yr EFS (95 % CI)",
        "median (days)",
        title=f"Event-free survival (cut-off {efs['as_of']}); log-rank p {p}",
        title_justify="left",
    )
    for arm in ("study", "control"):
        part = efs[arm]
        horizon = part["survival_at_horizon"]
        if horizon["survival"] is None:
            estimate = f"not estimable: {horizon['reason']}"
        else:
            band = horizon.get("ci95")
            estimate = f"{horizon['survival']:.3f}" + (f" ({band[0]:.3f}-{band[1]:.3f})" if band else "")
        median = part["median"]["days"]
        table.add_row(
            arm, str(part["n"]), str(part["events"]), estimate, "-" if median is None else str(median)
        )
    return table


def _consort_table(consort: dict[str, Any]) -> Table:
    table = Table(
        "step", "n", "lost on the way", title=f"CONSORT (cut-off {consort['as_of']})", title_justify="left"
    )
    drops = {d["to"]: d for d in consort["drops"]}
    for step in consort["steps"]:
        drop = drops.get(step["step"])
        reasons = "; ".join(f"{n} x {r}" for r, n in drop["reasons"].items()) if drop else ""
        lost = f"{drop['n']}: {reasons}" if drop and drop["n"] else ""
        table.add_row(step["step"], str(step["n"]), lost)
    table.add_row("historical controls enrolled", str(consort["historical_controls_enrolled"]), "")
    return table


class PlotName(StrEnum):
    KM = "km"
    WATERFALL = "waterfall"
    PRIMARY = "primary"
    CONSORT = "consort"


@cli.command()
def plot(
    name: Annotated[PlotName, typer.Argument(help="Which figure")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write; .png or .svg")],
    as_of: AsOfOption = None,
    assay: Annotated[str | None, typer.Option(help="flow or ngs (waterfall, primary)")] = None,
    analysis_set: AnalysisSetOption = "full",
) -> None:
    """Draw a publication figure of the endpoint analyses to a PNG or SVG file."""
    from app.plots.figures import FORMATS
    from app.plots.figures import plot as draw
    from app.services.errors import ServiceError

    fmt = output.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise _fail(f"{output}: the file name must end in .png or .svg", EXIT_USAGE)
    if not output.parent.is_dir():
        raise _fail(f"{output.parent}: no such folder", EXIT_USAGE)
    settings = Settings()
    cut_off = _as_of(as_of)
    db, protocol = _load(settings)
    try:
        image = draw(
            db, protocol, name=name.value, fmt=fmt, as_of=cut_off, assay=assay, analysis_set=analysis_set
        )
    except ServiceError as exc:
        raise _fail(exc.detail, EXIT_USAGE) from None
    except DBAPIError as exc:
        raise _fail(f"database unreachable ({_where(settings)}): {exc.orig}", EXIT_DATABASE) from None
    finally:
        db.dispose()
    output.write_bytes(image)
    out.print(f"wrote {output} ({len(image)} bytes)")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
