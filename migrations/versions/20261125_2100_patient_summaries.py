"""derived per-patient rows of the endpoint analyses, and the generations that keep them fresh

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_generations",
        sa.Column("patient", sa.String(length=64), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient", name=op.f("pk_patient_generations")),
    )
    op.create_table(
        "patient_summaries",
        sa.Column("endpoint", sa.String(length=16), nullable=False),
        sa.Column("analysis_set", sa.String(length=64), nullable=False),
        sa.Column("assay", sa.String(length=16), nullable=False),
        sa.Column("patient", sa.String(length=64), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("protocol", sa.String(length=128), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("everyone", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=True),
        sa.Column("recorded", sa.DateTime(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("arm", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("stratum", sa.Text(), nullable=False),
        sa.Column("site", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("resources", sa.Text(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "endpoint", "analysis_set", "assay", "patient", "valid_from", name=op.f("pk_patient_summaries")
        ),
    )


def downgrade() -> None:
    op.drop_table("patient_summaries")
    op.drop_table("patient_generations")
