"""Runtime configuration: one Settings object, built once and passed down (never a module global)."""

from pathlib import Path

from pydantic import Field
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
    page_size_default: int = 50
    page_size_max: int = 500
    # Two senders racing on the same natural key: one loses on the unique constraint and retries.
    write_retries: int = 5
    # CDS Hooks: how long to wait for the EHR's FHIR server, and whether ineligible patients get a card.
    cds_timeout_s: float = 5.0
    cds_show_ineligible: bool = False
