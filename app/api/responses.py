"""FHIR JSON responses."""

import json
from typing import Any

from fastapi.responses import Response

FHIR_JSON = "application/fhir+json"


def fhir_response(
    body: dict[str, Any] | None, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    content = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content=content, status_code=status, media_type=FHIR_JSON, headers=headers)
