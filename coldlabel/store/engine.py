"""Engines and schema migrations, per backend, plus the small SQL helpers every repository uses.

* **SQLite** (the embedded default, ``Settings.store_url()``): WAL journal, ``busy_timeout``, foreign keys
  on; write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers (threads or processes) queue
  on the busy timeout instead of failing with "database is locked" when a read lock must be upgraded.
  The schema is **upgraded automatically** when a store is opened: one file, one user, nothing to run.
* **PostgreSQL** (``postgresql+psycopg://...``): ``pool_pre_ping``, a connect timeout and TCP keepalives
  (a cut network fails a query instead of hanging it); the schema is **never changed implicitly**. Opening a
  database whose revision is behind the code fails with a message that says to run ``coldlabel db upgrade``,
  because a shared server may have other readers that must be upgraded with care.

Opening a store, reading its revision and migrating it go through :func:`connect`: a database that cannot
be reached there (server down, wrong host or port, a SQLite file that cannot be opened) is a
:class:`StoreUnavailable` (or, for a SQLite file, a :class:`StoreError`) naming the redacted URL, which the
CLI prints as one line — not a driver traceback. Later, :func:`is_unavailable` tells a server that is away
(connection refused or dropped, SQLite busy past its timeout) from a bug; the store turns the first kind into
:class:`coldlabel.errors.StoreUnavailable`, which workers wait out.
"""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Sequence

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

from coldlabel.errors import StoreError, StoreUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"
BUSY_TIMEOUT_S = 60.0  # how long a SQLite writer waits for the lock; labeling writes are tiny
# PostgreSQL: give up connecting after 10 s, and notice a silently dead connection within about a minute.
PG_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                   "keepalives_count": 3}


def redact(url: str | sa.URL) -> str:
    """The URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _reason(exc: BaseException, url: str | sa.URL) -> str:
    """The driver's first line, without the password should a driver ever quote it."""
    orig = getattr(exc, "orig", None) or exc
    text = next((line.strip() for line in str(orig).splitlines() if line.strip()), type(orig).__name__)
    password = make_url(url).password
    return text.replace(password, "***") if password else text


@contextmanager
def connect(engine: Engine, url: str | sa.URL | None = None) -> Iterator[Connection]:
    """``engine.connect()`` for the open/migrate boundary: an unreachable database is a known error."""
    url = url or engine.url
    try:
        conn = engine.connect()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        if engine.dialect.name == "sqlite":
            raise StoreError(f"cannot open the SQLite store {redact(url)}: {_reason(exc, url)}; check that its "
                             "directory exists and is writable (data.root, store.url)") from None
        raise StoreUnavailable(f"database {redact(url)} cannot be reached: {_reason(exc, url)}; is the server "
                               "running, and are store.url (or --url) host, port and credentials right?") from None
    with conn:
        yield conn


def make_engine(url: str) -> Engine:
    """An engine with the per-backend settings described in the module docstring."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args=dict(PG_CONNECT_ARGS))
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file::memory:"):
        raise StoreError(f"store url {url!r}: in-memory SQLite is not supported (each connection would see "
                         "its own empty database); use a file path such as sqlite:///data/coldlabel.db")
    try:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of the SQLite store {url!r}: {exc.strerror or exc}") from None
    engine = sa.create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below), pysqlite must not
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync on checkpoint only
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that later writes can fail at once with SQLITE_BUSY (the busy timeout does
        # not apply to a read->write upgrade); IMMEDIATE takes the write lock up front and waits for it.
        write = conn.get_execution_options().get("coldlabel_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enable_wal(cursor) -> None:
    """Switch a database to WAL (persistent, so usually already done). Two processes creating a fresh file
    can collide here and SQLite does not apply the busy timeout to this switch, so retry it ourselves."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def is_unavailable(exc: BaseException) -> bool:
    """The database is away (down, unreachable, connection dropped, SQLite still locked after its busy
    timeout), as opposed to a bug or bad data: worth waiting for."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError):
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.OperationalError):  # SQLite: only a held lock is transient
        text = str(exc.orig).lower()
        return "locked" in text or "busy" in text
    return True  # PostgreSQL's OperationalError: connection failures, admin shutdown, cancelled statements


@contextmanager
def migration_connection(engine: Engine, url: str | sa.URL | None = None) -> Iterator[Connection]:
    """A connection for Alembic. On SQLite, foreign keys are switched off first (outside any transaction,
    where SQLite ignores the pragma): batch mode recreates a table by dropping the old one, and a DROP with
    foreign keys on would cascade-delete every row that references it. They are checked and switched back on
    after."""
    with connect(engine, url) as conn:
        sqlite_ = conn.dialect.name == "sqlite"
        if sqlite_:
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
        try:
            conn.execution_options(coldlabel_write=True)  # SQLite: one BEGIN IMMEDIATE transaction
            yield conn
            if sqlite_:
                broken = conn.connection.dbapi_connection.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(f"migration left {len(broken)} rows with dangling foreign keys: {broken[:3]}")
        finally:
            if sqlite_:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")


def alembic_config(url: str | None = None):
    """The Alembic config for ``migrations/``; ``url`` wins over the ini and the settings."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("prepend_sys_path", "")  # the app already imports labeler; leave sys.path alone
    if url:
        cfg.attributes["url"] = url  # not via set_main_option: configparser would choke on '%' in passwords
    return cfg


@lru_cache(maxsize=1)
def _script_directory():
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script_directory().get_current_head()
    assert head is not None, "migrations/versions is empty"
    return head


def current_revision(url_or_engine: str | Engine) -> str | None:
    """The database's Alembic revision (None for an empty database)."""
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with connect(engine) as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def _run_alembic(url: str, action: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        # On SQLite the whole migration is one BEGIN IMMEDIATE transaction, so two processes upgrading a
        # fresh file at once simply queue and the second finds nothing left to do.
        with migration_connection(engine, url) as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, revision)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` (what ``coldlabel db upgrade`` runs)."""
    _run_alembic(url, "upgrade", revision)


def downgrade(url: str, revision: str) -> None:
    _run_alembic(url, "downgrade", revision)


def check_schema(engine: Engine, url: str, auto_upgrade: bool) -> None:
    """Make sure the database is at head: upgrade it (``auto_upgrade``) or explain what to run."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is not None and current not in {s.revision for s in _script_directory().walk_revisions()}:
        raise StoreError(f"database {redact(url)} is at revision {current}, which this coldlabel does not "
                         f"know (newest known: {head}); it was written by a newer version: upgrade coldlabel")
    if auto_upgrade:
        upgrade(url)
        return
    raise StoreError(f"database {redact(url)} is at revision {current or '<empty>'} but this coldlabel needs "
                     f"{head}: run `coldlabel db upgrade` (with the same --config/--set store.url)")


# ---- helpers shared by the repositories ----------------------------------------------------------

def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def dialect_insert(conn: Connection, table: sa.Table):
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def check_choice(kind: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{kind} {value!r} is not one of {', '.join(allowed)}")


def json_safe(name: str, value: Any) -> Any:
    """Fail early, with the field's name, on values JSON cannot hold (instead of deep in the driver)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None
    return value
