"""Client assertions already used at the token endpoint: a `jti` is accepted once (SMART Backend Services)."""

from datetime import datetime

from sqlalchemy import DateTime, String, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.db.tables import Base


class UsedAssertionRow(Base):
    __tablename__ = "used_client_assertions"

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(DateTime())


def claim_assertion(
    session: Session, *, jti: str, client_id: str, expires_at: datetime, now: datetime
) -> bool:
    """True the first time a jti is seen; the primary key, not a lookup, decides between racing requests."""
    session.execute(delete(UsedAssertionRow).where(UsedAssertionRow.expires_at < now))
    try:
        with session.begin_nested():
            session.add(
                UsedAssertionRow(jti=f"{client_id}:{jti}", client_id=client_id, expires_at=expires_at)
            )
    except IntegrityError:
        return False
    return True
