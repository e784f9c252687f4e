"""search_index by reference value (a patient's record at registry scale)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:50:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_search_index_reference", "search_index", ["value", "param"])


def downgrade() -> None:
    op.drop_index("ix_search_index_reference", table_name="search_index")
