"""The operators' command line (issue 9): `mrdhub serve | migrate | import | export | warm | summary | plot`.

Exit codes: 0 done; 1 some bundles or lines rejected; 2 usage (a missing file, a bad option); 3 database
unreachable or not migrated. Configuration comes from the environment like the service's (DATABASE_URL, ...).
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
from sqlalchemy import func, inspect, select
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
    """Bundles (or resources) per second (rich's own speed column counts bytes)."""

    def __init__(self, unit: str = "bundles") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            f"-- {self.unit}/s" if speed is None else f"{speed:.1f} {self.unit}/s",
            style="progress.data.speed",
        )


@dataclass
class ImportReport:
    accepted: int = 0
    entries: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (bundle or file:line, reason)
    resources: int = 0  # from NDJSON files of resources (bulk import)
    created: int = 0
    updated: int = 0
    resources_rejected: int = 0


def _import_resources(db: Database, settings: Settings, file: Path, report: ImportReport) -> None:
    """An NDJSON file of resources through the bulk import (as POST /api/v1/import), with a progress bar
    over its bytes."""
    from rich.progress import DownloadColumn, TransferSpeedColumn

    from app.protocol import load_protocol
    from app.services.bulk_import import Report, import_file
    from app.services.checks import protocol_checks
    from app.services.ingest import TRUSTED

    checks = protocol_checks(load_protocol(settings.protocol_path))
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rate]} resources/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(file.name, total=file.stat().st_size, rate="--")

        def advance(done: Report) -> bool:
            rate = done.progress.as_json()["resources_per_s"]
            progress.update(task, completed=done.progress.bytes_read, rate=f"{rate or 0:.0f}")
            return True

        done = import_file(
            db, file, principal=TRUSTED, checks=checks, retries=settings.write_retries, on_progress=advance
        )
        advance(done)
    report.resources += done.progress.accepted
    report.created += done.progress.created
    report.updated += done.progress.updated
    report.resources_rejected += done.progress.rejected
    for rejection in done.rejections:
        issue = rejection["outcome"]["issue"][0]
        where = f" at {', '.join(issue['expression'])}" if issue.get("expression") else ""
        report.rejected.append((f"{file.name}:{rejection['line']}", f"{issue['diagnostics']}{where}"))


def _is_resource_ndjson(file: Path) -> bool:
    """An .ndjson file of resources (a bulk export's), not of bundles: judged by its first line."""
    if file.suffix != ".ndjson":
        return False
    with file.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                try:
                    first = json.loads(raw)
                except ValueError:
                    return False  # reported line by line as not JSON, as before
                return isinstance(first, dict) and first.get("resourceType") != "Bundle"
    return False


def _bundles(path: Path) -> Iterator[tuple[str, Any]]:
    """(name, parsed JSON or the parse error) for a .json bundle, or each line of an .ndjson file of
    bundles."""
    files = sorted([*path.glob("*.json"), *path.glob("*.ndjson")]) if path.is_dir() else [path]
    for file in files:
        if _is_resource_ndjson(file):
            continue
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
    return sum(1 for _ in _bundles(path))


def _resource_files(path: Path) -> list[Path]:
    """NDJSON files of resources, in the order a bulk export lists them (what others refer to first)."""
    from app.services.bulk_export import ORDER

    files = [
        f for f in (sorted(path.glob("*.ndjson")) if path.is_dir() else [path]) if _is_resource_ndjson(f)
    ]
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(files, key=lambda f: (rank.get(f.stem, len(ORDER)), f.name))


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
    resource_files = _resource_files(path)
    try:
        bundles = _count(path)
        if bundles or not resource_files:
            with Progress(*columns, console=err) as progress:
                task = progress.add_task("importing", total=bundles)
                for name, data in _bundles(path):
                    reason = _ingest(db, settings, data, report)
                    if reason:
                        report.rejected.append((name, reason))
                    progress.advance(task)
        for file in resource_files:
            _import_resources(db, settings, file, report)
    except DBAPIError as exc:
        raise _fail(f"database unreachable ({_where(settings)}): {exc.orig}", EXIT_DATABASE) from None
    finally:
        db.dispose()
    if resource_files:
        out.print(
            f"resources: accepted {report.resources} ({report.created} created, {report.updated} updated), "
            f"rejected {report.resources_rejected}"
        )
    out.print(
        f"accepted {report.accepted} bundle(s) ({report.entries} entries), rejected {len(report.rejected)}"
    )
    if report.rejected:
        table = Table("bundle or line", "reason", title="Rejected", title_justify="left")
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


@cli.command()
def export(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for the NDJSON files (made if missing)")
    ],
    types: Annotated[
        str | None,
        typer.Option("--type", help="Comma-separated resource types (default: every clinical type)"),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only resources changed after this instant (with offset)")
    ] = None,
) -> None:
    """Export the store as FHIR NDJSON, one <Type>.ndjson per type, as GET /fhir/$export would.

    The files hold what was current when the export began (a consistent snapshot); `mrdhub import DIR`
    reads them back.
    """
    from app.fhir.outcome import FhirError
    from app.services import bulk_export
    from app.services.ingest import TRUSTED, now_ms

    params = [(name, value) for name, value in (("_type", types), ("_since", since)) if value is not None]
    try:
        request = bulk_export.parse_kickoff(params, principal=TRUSTED, patient_level=False, lenient=False)
    except FhirError as exc:
        raise _fail(str(exc).replace("_type", "--type").replace("_since", "--since"), EXIT_USAGE) from None
    if output.exists() and not output.is_dir():
        raise _fail(f"{output}: not a folder", EXIT_USAGE)
    settings = Settings()
    db = _database(settings)
    at = now_ms()
    written: list[tuple[str, int, Path]] = []
    try:
        outputs = bulk_export.plan(db, request, TRUSTED, at=at)
        output.mkdir(parents=True, exist_ok=True)
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(unit="resources"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("exporting", total=sum(o["count"] for o in outputs))
            for o in outputs:
                target = output / f"{o['type']}.ndjson"
                with target.open("wb") as handle:
                    for page in bulk_export.lines(db, request, o["type"], site=None, at=at):
                        handle.write(page)
                        progress.advance(task, page.count(b"\n"))
                written.append((o["type"], o["count"], target))
    except DBAPIError as exc:
        raise _fail(f"database unreachable ({_where(settings)}): {exc.orig}", EXIT_DATABASE) from None
    finally:
        db.dispose()
    from app.fhir.dates import instant

    table = Table("type", "resources", "file", title=f"Exported as of {instant(at)}", title_justify="left")
    for resource_type, n, target in written:
        table.add_row(resource_type, str(n), str(target))
    out.print(table)
    out.print(f"exported {sum(n for _, n, _ in written)} resource(s) in {len(written)} file(s) to {output}")


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
def warm() -> None:
    """Rebuild the derived per-patient rows that today's endpoint questions read (after a restore, a new
    protocol file, or a day of LIS feeds), so that the first request does not."""
    from app.db.tables import PatientSummaryRow
    from app.services import endpoints

    settings = Settings()
    db, protocol = _load(settings)
    try:
        with out.status("rebuilding the derived rows of every changed patient"):
            endpoints.warm_derived_rows(db, protocol)
        with db.read() as session:
            patients = session.scalar(select(func.count(func.distinct(PatientSummaryRow.patient))))
    finally:
        db.dispose()
    out.print(f"derived rows current for {patients} patients (protocol {protocol.version})")


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
