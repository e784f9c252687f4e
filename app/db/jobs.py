"""Persistence of bulk jobs (the `jobs` table). It flushes, never commits: app/services/jobs.py owns the
transactions."""

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.tables import JobRow

UNFINISHED = ("queued", "running")


def add(session: Session, row: JobRow) -> None:
    session.add(row)
    session.flush()


def get(session: Session, job_id: str) -> JobRow | None:
    return session.get(JobRow, job_id)


def set_fields(session: Session, job_id: str, *, only_unfinished: bool = False, **values: Any) -> bool:
    """Update a job's columns; with `only_unfinished`, only while it is queued or running (a cancelled or
    failed job is never brought back). Returns whether a row changed."""
    statement = update(JobRow).where(JobRow.id == job_id).values(**values)
    if only_unfinished:
        statement = statement.where(JobRow.status.in_(UNFINISHED))
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def fail_stale(session: Session, *, heartbeat_before: datetime, now: datetime, reason: str) -> list[str]:
    """Mark failed every unfinished job whose heartbeat stopped before the given moment; their ids."""
    stale = list(
        session.scalars(
            select(JobRow.id).where(JobRow.status.in_(UNFINISHED), JobRow.heartbeat_at < heartbeat_before)
        )
    )
    if stale:
        session.execute(
            update(JobRow)
            .where(JobRow.id.in_(stale), JobRow.status.in_(UNFINISHED))
            .values(status="failed", finished_at=now, error=reason)
        )
    return stale


def delete(session: Session, job_id: str) -> None:
    row = session.get(JobRow, job_id)
    if row is not None:
        session.delete(row)
        session.flush()
