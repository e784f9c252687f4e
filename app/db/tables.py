"""The store's tables: every FHIR resource, its versions, and what is indexed for search.

One row per logical resource in `resources` (its current version, for fast reads), every version in
`resource_versions` (history is never rewritten), identifiers in `resource_identifiers` whose unique
constraint is what makes re-sent results idempotent, and search values in `search_index`.
"""

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Key = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ResourceRow(Base):
    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("resource_type", "logical_id", name="uq_resources_type_id"),)

    pk: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(64))
    # Null only between allocation and the first write inside one transaction.
    logical_id: Mapped[str | None] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[str] = mapped_column(Text)


class ResourceVersionRow(Base):
    __tablename__ = "resource_versions"
    __table_args__ = (UniqueConstraint("resource_pk", "version_id", name="uq_resource_versions_version"),)

    pk: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(ForeignKey("resources.pk", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(8))
    content: Mapped[str] = mapped_column(Text)


class IdentifierRow(Base):
    """Business identifiers: the natural key. The unique constraint, not a lookup, prevents duplicates."""

    __tablename__ = "resource_identifiers"
    __table_args__ = (
        UniqueConstraint("resource_type", "system", "value", name="uq_resource_identifiers_natural_key"),
        Index("ix_resource_identifiers_resource_pk", "resource_pk"),
    )

    pk: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(ForeignKey("resources.pk", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(64))
    system: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))


class SearchIndexRow(Base):
    """One searchable value of the current version: a token, a reference or a date range.

    All datetimes in the store are naive UTC, so that SQLite and PostgreSQL compare them alike.
    """

    __tablename__ = "search_index"
    __table_args__ = (
        Index("ix_search_index_lookup", "resource_type", "param", "value"),
        Index("ix_search_index_dates", "resource_type", "param", "start"),
        Index("ix_search_index_resource_pk", "resource_pk"),
        # A patient's record gathers what points at "Patient/<id>" through any of a few parameters, of
        # any type: the lookup index leads with the type, so this one leads with the value.
        Index("ix_search_index_reference", "value", "param"),
    )

    pk: Mapped[int] = mapped_column(Key, primary_key=True, autoincrement=True)
    resource_pk: Mapped[int] = mapped_column(ForeignKey("resources.pk", ondelete="CASCADE"))
    resource_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    system: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[str | None] = mapped_column(String(255))
    start: Mapped[datetime | None] = mapped_column(DateTime())
    end: Mapped[datetime | None] = mapped_column(DateTime())


class JobRow(Base):
    """A bulk job (NDJSON import, FHIR $export): its state survives workers and restarts (issue 8).

    `heartbeat_at` is refreshed while the job runs; a queued or running job whose heartbeat stopped (the
    process running it died or restarted) is marked failed when it is next read (app/services/jobs.py).
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_owner", "owner"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # import | export
    status: Mapped[str] = mapped_column(String(16))  # queued | running | completed | failed | cancelled
    owner: Mapped[str] = mapped_column(String(255))  # the client id that started it
    site: Mapped[str | None] = mapped_column(String(64))  # the owner's site scope, None for every site
    created_at: Mapped[datetime] = mapped_column(DateTime())
    started_at: Mapped[datetime | None] = mapped_column(DateTime())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime())
    request: Mapped[str] = mapped_column(Text)  # JSON: what was asked (export parameters, content size)
    progress: Mapped[str] = mapped_column(Text)  # JSON: counters
    result: Mapped[str | None] = mapped_column(Text)  # JSON: per-line report (import), manifest (export)
    error: Mapped[str | None] = mapped_column(Text)  # why a failed job failed


class PatientGenerationRow(Base):
    """How many times a patient's data have changed: every write of a resource linked to the patient
    increments it in the writer's transaction (app/db/derived.py); `patient` "*" counts the writes that
    concern every patient (Organization, ResearchStudy)."""

    __tablename__ = "patient_generations"

    patient: Mapped[str] = mapped_column(String(64), primary_key=True)  # logical id, or "*"
    generation: Mapped[int] = mapped_column(BigInteger)


class PatientSummaryRow(Base):
    """A patient's contribution to one endpoint analysis (set x assay), derived from their whole record.

    Current while `generation` and `everyone` equal the current generations and `protocol` the protocol
    file's version; it answers the cut-off days from `valid_from` (date.min: unbounded) to `valid_until`
    (None: unbounded) when the versions recorded by the cut-off include `recorded` (app/db/derived.py).
    A patient may have rows for several such spans. `status` "not-enrolled": the patient adds nothing.
    """

    __tablename__ = "patient_summaries"

    endpoint: Mapped[str] = mapped_column(String(16), primary_key=True)  # "primary"
    analysis_set: Mapped[str] = mapped_column(String(64), primary_key=True)
    assay: Mapped[str] = mapped_column(String(16), primary_key=True)
    patient: Mapped[str] = mapped_column(String(64), primary_key=True)  # logical id
    valid_from: Mapped[date] = mapped_column(Date(), primary_key=True)
    protocol: Mapped[str] = mapped_column(String(128))
    generation: Mapped[int] = mapped_column(BigInteger)
    everyone: Mapped[int] = mapped_column(BigInteger)  # the generation of "*"
    valid_until: Mapped[date | None] = mapped_column(Date())
    recorded: Mapped[datetime] = mapped_column(DateTime())  # latest lastUpdated of the versions read
    reference: Mapped[str] = mapped_column(Text)  # versioned Patient reference
    arm: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    stratum: Mapped[str] = mapped_column(Text)
    site: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    resources: Mapped[str] = mapped_column(Text)  # JSON list
    flags: Mapped[str] = mapped_column(Text)  # JSON list
