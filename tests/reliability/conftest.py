"""Helpers for the reliability tests: what is stored, counted the way a partial write would show."""

from typing import Any

from sqlalchemy import Engine, func, select

from app.db.tables import IdentifierRow, ResourceRow, ResourceVersionRow, SearchIndexRow

# The server's own trail (AuditEvent) records failed attempts too, so it is not "what the request wrote".
TRAIL = ("AuditEvent",)


def stored_rows(engine: Engine) -> dict[str, int]:
    """Rows per table held by clinical resources: a change after a failed request is a partial write."""
    clinical = ResourceRow.resource_type.not_in(TRAIL)
    counts: dict[str, int] = {}
    with engine.connect() as connection:
        counts["resources"] = (
            connection.scalar(select(func.count()).select_from(ResourceRow).where(clinical)) or 0
        )
        for table in (ResourceVersionRow, IdentifierRow, SearchIndexRow):
            query: Any = (
                select(func.count())
                .select_from(table)
                .join(ResourceRow, ResourceRow.pk == table.resource_pk)
                .where(clinical)
            )
            counts[str(table.__tablename__)] = connection.scalar(query) or 0
    return counts
