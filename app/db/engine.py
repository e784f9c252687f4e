"""Engine and unit of work: the one place where transactions begin, commit and roll back."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

# PostgreSQL SQLSTATEs (errcodes-appendix.html) that mean "not reachable now, try again": class 08
# connection exception; admin/crash shutdown and "cannot connect now" (starting up or shutting down); too
# many connections; a statement cancelled by statement_timeout.
UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300", "57014"}
# SQLite (sqlite.org/rescode.html): the file is locked past busy_timeout, or cannot be opened.
UNAVAILABLE_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN")


def make_engine(url: str, *, connect_timeout_s: int = 5, statement_timeout_s: float | None = None) -> Engine:
    parsed = make_url(url)
    # Statement parameters are resource content: they stay out of logs and exception messages.
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; we issue BEGIN ourselves.
        event.listen(engine, "begin", _sqlite_begin)
    else:
        connect_args: dict[str, Any] = {"connect_timeout": max(2, connect_timeout_s)}  # libpq's minimum is 2
        if statement_timeout_s:
            # A statement stuck on a lock cannot outlive the request it serves (57014, answered with 503).
            connect_args["options"] = f"-c statement_timeout={int(statement_timeout_s * 1000)}"
        # pre_ping replaces connections that died with a restarted server, so the service recovers alone.
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=20,
            max_overflow=20,
            connect_args=connect_args,
            hide_parameters=True,
        )
    event.listen(engine, "before_cursor_execute", _within_deadline)
    return engine


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or is overloaded right now (not a bug, not bad data): retry later."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlite_name = getattr(orig, "sqlite_errorname", None)
    if isinstance(sqlite_name, str):
        return sqlite_name.startswith(UNAVAILABLE_SQLITE)
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate is None:
        return True  # psycopg: a client-side connection failure (refused, closed, timed out) has no SQLSTATE
    return isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES)


class DeadlineExceeded(Exception):
    """The request's time limit passed before its unit of work committed; the work was rolled back."""


class Deadline:
    """A request's time limit, seen by the database layer of the thread doing its work (via a ContextVar).

    The request answers "timed out" only if no commit is under way (`expire`), and a commit starts only if the
    request has not timed out (`committing`): a client is never told a write failed that was in fact stored.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._expired = False
        self._committing = False

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def check(self) -> None:
        if self._expired or time.monotonic() >= self.at:
            raise DeadlineExceeded

    @contextmanager
    def committing(self) -> Iterator[None]:
        with self._lock:
            self.check()
            self._committing = True
        try:
            yield
        finally:
            with self._lock:
                self._committing = False

    def expire(self) -> bool:
        """Marks the request timed out; False while a commit is under way (its answer is on its way)."""
        with self._lock:
            if self._committing:
                return False
            self._expired = True
            return True


current_deadline: ContextVar[Deadline | None] = ContextVar("mrdhub_deadline", default=None)


def _within_deadline(*_args: Any) -> None:
    deadline = current_deadline.get()
    if deadline is not None:
        deadline.check()


@contextmanager
def _commit_window() -> Iterator[None]:
    deadline = current_deadline.get()
    if deadline is None:
        yield
        return
    with deadline.committing():
        yield


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A writer takes the lock up front (IMMEDIATE) so two writers queue on busy_timeout instead of
    # failing when a read lock is upgraded; readers stay DEFERRED and run beside writers under WAL.
    readonly = conn.get_execution_options().get("mrdhub_readonly", False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


class Database:
    """Owns the engine; hands out one session per unit of work, committed or rolled back as a whole."""

    def __init__(
        self, url: str, *, connect_timeout_s: int = 5, statement_timeout_s: float | None = None
    ) -> None:
        self.url = url
        self.engine = make_engine(
            url, connect_timeout_s=connect_timeout_s, statement_timeout_s=statement_timeout_s
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(mrdhub_readonly=True), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as session:
            session.begin()
            try:
                yield session
                with _commit_window():
                    session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Reads run in a transaction too (a consistent snapshot), but never write."""
        with self._read_sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def dispose(self) -> None:
        self.engine.dispose()
