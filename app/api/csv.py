"""CSV answers for the trial office's spreadsheets: nested fields are flattened to dotted columns."""

import csv
import io
from typing import Any

from fastapi import Request
from fastapi.responses import Response


def wants_csv(request: Request) -> bool:
    return "text/csv" in request.headers.get("accept", "")


def csv_response(rows: list[dict[str, Any]], *, filename: str) -> Response:
    flat = [_flatten(row) for row in rows]
    columns = list(dict.fromkeys(k for row in flat for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = "; ".join(
                str(v.get("observation", v)) if isinstance(v, dict) else str(v) for v in value
            )
        else:
            flat[name] = "" if value is None else value
    return flat
