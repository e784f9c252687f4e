"""fhir resource store

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:59:25.743857
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("logical_id", sa.String(length=64), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_resources")),
        sa.UniqueConstraint("resource_type", "logical_id", name="uq_resources_type_id"),
    )
    op.create_table(
        "resource_identifiers",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["resources.pk"],
            name=op.f("fk_resource_identifiers_resource_pk_resources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_resource_identifiers")),
        sa.UniqueConstraint("resource_type", "system", "value", name="uq_resource_identifiers_natural_key"),
    )
    with op.batch_alter_table("resource_identifiers", schema=None) as batch_op:
        batch_op.create_index("ix_resource_identifiers_resource_pk", ["resource_pk"], unique=False)

    op.create_table(
        "resource_versions",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["resources.pk"],
            name=op.f("fk_resource_versions_resource_pk_resources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_resource_versions")),
        sa.UniqueConstraint("resource_pk", "version_id", name="uq_resource_versions_version"),
    )
    op.create_table(
        "search_index",
        sa.Column(
            "pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("resource_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("value", sa.String(length=255), nullable=True),
        sa.Column("start", sa.DateTime(), nullable=True),
        sa.Column("end", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["resource_pk"],
            ["resources.pk"],
            name=op.f("fk_search_index_resource_pk_resources"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_search_index")),
    )
    with op.batch_alter_table("search_index", schema=None) as batch_op:
        batch_op.create_index("ix_search_index_dates", ["resource_type", "param", "start"], unique=False)
        batch_op.create_index("ix_search_index_lookup", ["resource_type", "param", "value"], unique=False)
        batch_op.create_index("ix_search_index_resource_pk", ["resource_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("search_index", schema=None) as batch_op:
        batch_op.drop_index("ix_search_index_resource_pk")
        batch_op.drop_index("ix_search_index_lookup")
        batch_op.drop_index("ix_search_index_dates")

    op.drop_table("search_index")
    op.drop_table("resource_versions")
    with op.batch_alter_table("resource_identifiers", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_identifiers_resource_pk")

    op.drop_table("resource_identifiers")
    op.drop_table("resources")
