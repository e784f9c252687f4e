"""The operator's commands: register a client, sign an assertion, and get a token with it."""

from pathlib import Path

import httpx
import pytest

from app.cli import main
from app.main import create_app
from app.settings import Settings

pytestmark = pytest.mark.anyio


async def test_a_registered_client_gets_a_token(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clients = tmp_path / "clients.json"
    monkeypatch.setenv("AUTH_CLIENTS_FILE", str(clients))
    key = tmp_path / "lis.pem"
    assert (
        main(
            [
                "register-client",
                "--client-id",
                "lis-ningbo",
                "--site",
                "NINGBO-NWCH",
                "--scopes",
                "system/Observation.c system/Patient.c",
                "--key",
                str(key),
            ]
        )
        == 0
    )
    assert key.exists()
    assert "curl" in capsys.readouterr().out
    assert (
        main(
            [
                "assertion",
                "--client-id",
                "lis-ningbo",
                "--key",
                str(key),
                "--aud",
                "http://mrdhub.test/auth/token",
            ]
        )
        == 0
    )
    assertion = capsys.readouterr().out.strip()
    app = create_app(settings.model_copy(update={"auth_clients_file": clients}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mrdhub.test") as c:
        answer = await c.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion,
                "scope": "system/Observation.c",
            },
        )
    app.state.db.dispose()
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "system/Observation.c"
