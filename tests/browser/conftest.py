"""One real server and one real headless Chromium for the browser tests.

The server is mrdhub under uvicorn on a free loopback port, authorisation on, loaded with the demo cohort
through the LIS ingest path (`app.cli.load_demo`). The browser is Debian's Chromium driven by Debian's
chromedriver (`make browser` installs both); nothing here downloads a browser. A browser that cannot start
fails the tests: CI must notice, so they never skip.
"""

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from app.cli import load_demo
from app.dashboard import views
from app.db.tables import Base
from app.main import create_app
from app.services import screening
from app.services.endpoints import resolve_as_of
from app.settings import Settings
from tests.conftest import TRIAL_OFFICE, client_assertion

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "bundles"
SCREENS = ROOT / "build" / "screens"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LAPTOP = (1366, 900)
TABLET = (820, 1180)
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class Served:
    url: str
    app: Any
    client_key: ec.EllipticCurvePrivateKey
    as_of: str  # one cut-off for the dashboard and the API alike

    def token(self, client_id: str = TRIAL_OFFICE, scope: str = "system/*.rs") -> str:
        answer = httpx.post(
            f"{self.url}/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": client_assertion(self.client_key, client_id, f"{self.url}/auth/token"),
                "scope": scope,
            },
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def api(self, path: str, **params: str) -> Any:
        answer = httpx.get(
            f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {self.token()}"}
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="package")
def served(
    database_url: str, auth_files: tuple[Path, Path], client_key: ec.EllipticCurvePrivateKey
) -> Iterator[Served]:
    clients, key = auth_files
    settings = Settings(
        database_url=database_url, auth_enabled=True, auth_clients_file=clients, auth_key_file=key
    )
    assert load_demo(settings, DEMO) == 0
    app = create_app(settings)
    # One screening decision, so the screening log has a row to show.
    screened = next(
        p
        for p in views.patients(app.state.db, app.state.protocol, as_of=None)
        if p["status"] == "not enrolled"
    )
    screening.record_decision(
        app.state.db,
        app.state.protocol,
        patient=screened["id"],
        as_of=None,
        decision="not-enrol",
        reason="family chose standard care",
        override_reason=None,
        retries=settings.write_retries,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(250):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    as_of = resolve_as_of(app.state.protocol, None).isoformat()
    try:
        yield Served(f"http://127.0.0.1:{port}", app, client_key, as_of)
    finally:
        server.should_exit = True
        thread.join(10)
        with app.state.db.engine.begin() as connection:
            for table in reversed(Base.metadata.sorted_tables):
                connection.execute(table.delete())
        app.state.db.dispose()


@pytest.fixture(scope="package")
def driver() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    profile = tempfile.TemporaryDirectory(prefix="mrdhub-chromium-")
    options.add_argument(f"--user-data-dir={profile.name}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:  # a missing driver is a ValueError/NoSuchDriverException: fail either way
        profile.cleanup()
        pytest.fail(f"headless Chromium did not start ({CHROMIUM}, {CHROMEDRIVER}; `make browser`): {exc}")
    browser.set_window_size(*LAPTOP)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()
        profile.cleanup()


def sign_in(driver: WebDriver, served: Served) -> None:
    """Paste a fresh trial-office token into the login form, as a person would."""
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(served.token())
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(driver, 10).until(lambda d: "/dashboard/login" not in d.current_url)


def open_page(driver: WebDriver, served: Served, path: str) -> None:
    """Open a dashboard page, signing in again if the short-lived token has run out."""
    driver.get(f"{served.url}{path}")
    if "/dashboard/login" in driver.current_url:
        sign_in(driver, served)
    WebDriverWait(driver, 10).until(expected_conditions.presence_of_element_located((By.TAG_NAME, "h1")))
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script(
            "return Array.from(document.images).every(i => i.complete) && document.readyState === 'complete'"
        )
    )


def severe_console_entries(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def screenshot(driver: WebDriver, name: str, size: tuple[int, int] = LAPTOP) -> Path:
    """The whole page at the given window width, for a person to review."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    width, height = size
    driver.set_window_size(width, height)
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, max(height, min(int(full) + 140, 6000)))
    path = SCREENS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(*LAPTOP)
    return path
