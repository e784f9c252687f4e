"""Runtime configuration: one Settings object, built once and passed down (never a module global)."""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{ROOT / 'var' / 'mrdhub.sqlite3'}",
        description="SQLAlchemy URL; postgresql+psycopg://... in production.",
    )
    protocol_path: Path = ROOT / "protocols" / "nct06607419.toml"
    log_level: str = "INFO"
    # Limits protect the service from a runaway sender; each breach is a 413 with an OperationOutcome.
    max_body_bytes: int = 10 * 1024 * 1024
    max_bundle_entries: int = 1000
    # A longer JSON string is a 413 naming its element; room for a base64 PDF report of ~700 kB.
    max_string_chars: int = 1_000_000
    # Past this a request is answered 503 + Retry-After (408 if its body is still arriving), its work rolled
    # back; PostgreSQL statements are cancelled after it too.
    request_timeout_s: float = 30.0
    retry_after_s: int = 5
    # A database that does not answer fails fast (503, /readyz not ready) instead of hanging the request.
    database_connect_timeout_s: int = 5
    page_size_default: int = 50
    page_size_max: int = 500
    # Two senders racing on the same natural key: one loses on the unique constraint and retries.
    write_retries: int = 5
    # Authorisation (SMART Backend Services). Off only for a local demo: production refuses to start
    # without it unless AUTH_FORCE_OFF is set as well.
    environment: str = "production"
    auth_enabled: bool = True
    auth_force_off: bool = False
    auth_clients_file: Path = ROOT / "var" / "clients.json"
    auth_key_file: Path = ROOT / "var" / "server-key.pem"
    public_base_url: str | None = None  # the URL clients use, if not the one requests arrive on
    # GET /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, it is off (auth on).
    metrics_token: SecretStr | None = None
    # CDS Hooks: how long to wait for the EHR's FHIR server, and whether ineligible patients get a card.
    cds_timeout_s: float = 5.0
    cds_show_ineligible: bool = False
    # The FHIR base URLs a hook's `fhirServer` may name (JSON list). A server not listed is never read.
    cds_fhir_servers: list[str] = Field(default_factory=list)
