"""Shared fixtures: a real database (SQLite by default, PostgreSQL with TEST_DATABASE_URL) migrated with
Alembic, emptied between tests, and the real app reached through httpx's ASGI transport."""

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, text

from app.db.migrations import upgrade
from app.db.tables import Base
from app.main import create_app
from app.services.auth import register_client
from app.settings import Settings

FHIR_JSON = {"content-type": "application/fhir+json"}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    upgrade(url)
    return url


@pytest.fixture
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


# Test clients, registered like real ones: the trial office (every site) and one LIS per site.
TRIAL_OFFICE = "trial-office"
CLIENT_SCOPES = {TRIAL_OFFICE: ("system/*.cruds", None)}
for _site in ("HEFEI-APCH", "FUZHOU-FCH", "SHANGHAI-SCMC", "NINGBO-NWCH"):
    CLIENT_SCOPES[f"lis-{_site.lower()}"] = ("system/*.cruds", _site)


@pytest.fixture(scope="session")
def client_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="session")
def auth_files(
    tmp_path_factory: pytest.TempPathFactory, client_key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("auth")
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(client_key.public_key(), as_dict=True) | {"kid": "test-key"}
    for client_id, (scopes, site) in CLIENT_SCOPES.items():
        register_client(
            folder / "clients.json", client_id=client_id, scopes=scopes, site=site, jwks={"keys": [jwk]}
        )
    return folder / "clients.json", folder / "server-key.pem"


@pytest.fixture
def settings(database_url: str, auth_files: tuple[Path, Path]) -> Settings:
    clients, key = auth_files
    return Settings(
        database_url=database_url, auth_enabled=True, auth_clients_file=clients, auth_key_file=key
    )


def client_assertion(key: ec.EllipticCurvePrivateKey, client_id: str, audience: str, **changes: Any) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": now + dt.timedelta(minutes=4),
        "jti": uuid.uuid4().hex,
    } | changes
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "test-key"})


TokenFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def token_for(app: object, client_key: ec.EllipticCurvePrivateKey) -> TokenFactory:
    """An access token from the real token endpoint for one of the registered test clients."""

    async def issue(client_id: str = TRIAL_OFFICE, scope: str = "system/*.cruds") -> str:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://mrdhub.test") as c:
            answer = await c.post(
                "/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": client_assertion(
                        client_key, client_id, "http://mrdhub.test/auth/token"
                    ),
                    "scope": scope,
                },
            )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    return issue


@pytest.fixture
def app(settings: Settings) -> Iterator[object]:
    application = create_app(settings)
    yield application
    db = application.state.db
    with db.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    db.dispose()


@pytest.fixture
async def client(app: object, token_for: TokenFactory) -> AsyncIterator[httpx.AsyncClient]:
    """The trial office's client: every scope, every site."""
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {await token_for()}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://mrdhub.test", headers=headers) as c:
        yield c


@pytest.fixture
def data_dir() -> Path:
    return Path(__file__).parent / "data"
