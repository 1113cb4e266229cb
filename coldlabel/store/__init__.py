"""The SQL store of the whole service: LLM request cache, runs and their users, per-stage results, labels.

Why SQL: many workers (Celery processes, inline threads) write at once and any of them may crash. Every
table has a natural unique key, and every write is an insert-or-ignore, an upsert or a replace inside one
transaction, so any stage can be re-entered after a crash and nothing is ever written twice. No other
package runs SQL: they call :class:`Store` and get plain dataclasses back.

    schema.py   the tables (Alembic in ``migrations/`` owns them; a test checks the two never drift)
    engine.py   engines per backend (SQLite: WAL, BEGIN IMMEDIATE; PostgreSQL), migrations, SQL helpers
    records.py  the dataclasses callers see
    cache.py    the LLM request cache          runs.py  runs and their users          labels.py  stages, labels
    claims.py   a user's claim: leases renewed while it is worked on, expired ones reaped, its outcome

A database that is away (down, unreachable, connection cut) raises :class:`StoreUnavailable` from every
method, never a driver error: callers wait for it instead of blaming the user.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coldlabel.errors import RunNotFound, StoreError, StoreUnavailable
from coldlabel.store.cache import RequestCache
from coldlabel.store.claims import ClaimRepository
from coldlabel.store.engine import (
    check_schema,
    current_revision,
    downgrade,
    head_revision,
    is_unavailable,
    make_engine,
    redact,
    upgrade,
)
from coldlabel.store.labels import LabelRepository
from coldlabel.store.records import (
    CachedCall,
    Edge,
    EdgeRow,
    Run,
    RunProgress,
    RunUser,
    StageRecord,
    Triplet,
    TripletRow,
    UserCounters,
)
from coldlabel.store.runs import RunRepository
from coldlabel.store.schema import LABEL_STAGES, RUN_STATUSES, USER_STATUSES, metadata

__all__ = [
    "Store", "StoreError", "StoreUnavailable", "RunNotFound", "CachedCall", "Edge", "EdgeRow", "Run",
    "RunProgress", "RunUser", "StageRecord", "Triplet", "TripletRow", "UserCounters", "LABEL_STAGES",
    "RUN_STATUSES", "USER_STATUSES", "metadata", "current_revision", "downgrade", "head_revision", "redact",
    "upgrade",
]


class Store(RequestCache, RunRepository, ClaimRepository, LabelRepository):
    """All reads and writes of the labeling system. Thread-safe; one per process is plenty.

    ``auto_upgrade`` (default: SQLite yes, PostgreSQL no) decides what happens when the schema is behind.
    """

    def __init__(self, url: str, *, auto_upgrade: bool | None = None) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._pid = os.getpid()
        try:  # an unreachable database is StoreUnavailable/StoreError here, not a driver traceback
            with self._unavailable_as_store_error():
                check_schema(self.engine, url, self.dialect == "sqlite" if auto_upgrade is None else auto_upgrade)
        except BaseException:
            self.engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Store({redact(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def ping(self) -> None:
        """One round trip to the database; StoreUnavailable when it cannot be reached."""
        with self._read() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- connections --
    @contextmanager
    def _unavailable_as_store_error(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.DBAPIError as exc:
            if not is_unavailable(exc):
                raise
            reason = str(exc.orig or exc).strip().splitlines()[0][:300]
            raise StoreUnavailable(f"database {redact(self.url)} unreachable: {reason}") from exc

    def _fork_check(self) -> None:
        # Pooled connections must not cross a fork (Celery prefork): the child drops the parent's pool.
        if os.getpid() != self._pid:
            self.engine.dispose(close=False)
            self._pid = os.getpid()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        self._fork_check()
        with self._unavailable_as_store_error(), self.engine.connect() as conn:
            conn.execution_options(coldlabel_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self._fork_check()
        with self._unavailable_as_store_error(), self.engine.connect() as conn:
            yield conn
