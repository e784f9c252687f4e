"""used client assertions (jti replay protection)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 18:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "used_client_assertions",
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_used_client_assertions")),
    )


def downgrade() -> None:
    op.drop_table("used_client_assertions")
