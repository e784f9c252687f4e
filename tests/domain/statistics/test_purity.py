"""The statistics core stays pure: numpy and scipy only (STYLE.md, "The shape" and habit 1)."""

import ast
import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]
FORBIDDEN = {"fastapi", "sqlalchemy", "pydantic", "fhir", "httpx", "pandas", "lifelines", "statsmodels"}


def test_importing_the_statistics_package_pulls_in_no_web_database_fhir_or_dataframe_library() -> None:
    # A fresh interpreter, because this test session has already imported lifelines and statsmodels.
    probe = "import sys, app.domain.statistics; print(sorted({m.split('.')[0] for m in sys.modules}))"
    output = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=REPOSITORY_ROOT
    ).stdout
    loaded = set(ast.literal_eval(output))
    assert {"numpy", "scipy"} <= loaded
    assert not loaded & FORBIDDEN
