"""The SQL store shared by the labeler and the workers: LLM request cache, runs, per-user progress,
per-stage results and the final labels (edges and triplets).

Why SQL: many workers (Celery processes, inline threads) write at once and any of them may crash. Every
table has a natural unique key, and every write is an insert-or-ignore, an upsert or a replace inside one
transaction, so any stage can be re-entered after a crash and nothing is ever written twice.

Backends:

* **SQLite** (the embedded default, ``Settings.store_url()``): WAL journal, ``busy_timeout``, foreign keys
  on; write transactions start with ``BEGIN IMMEDIATE`` so concurrent writers (threads or processes) queue
  on the busy timeout instead of failing with "database is locked" when a read lock must be upgraded.
  The schema is **upgraded automatically** when a store is opened: one file, one user, nothing to run.
* **PostgreSQL** (``postgresql+psycopg://...``): ``pool_pre_ping``; the schema is **never changed
  implicitly**. Opening a database whose revision is behind the code fails with a message that says to run
  ``coldlabel db upgrade``, because a shared server may have other readers that must be upgraded with care.

The schema is owned by Alembic (``migrations/``); :data:`metadata` below mirrors it and a test checks the
two never drift. Callers get plain methods and dataclasses; no session handling leaks out.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_S = 60.0  # how long a SQLite writer waits for the lock; labeling writes are tiny
RUN_STATUSES = ("active", "cancelled", "done")
USER_STATUSES = ("pending", "running", "done", "failed", "dead")
STAGES = ("profile", "categories", "subcategories", "items", "rerank")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
# Request fields that would carry credentials; the cache must never store them.
_SECRET_PARAM_NAMES = {"api_key", "apikey", "authorization", "headers", "extra_headers", "default_headers",
                       "extra_query"}


class StoreError(RuntimeError):
    """A store problem the user can act on; the message says what is wrong and what to run."""


class RunNotFound(StoreError, KeyError):
    """No run with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# ---- schema ---------------------------------------------------------------------------------------
# Named constraints so that Alembic (and SQLite batch mode) can always refer to them.
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

TS = sa.DateTime(timezone=True)  # always written as aware UTC; SQLite hands back naive UTC, see _utc()


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


llm_calls = sa.Table(
    "llm_calls", metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # sha256 hex of the full request, made by the caller
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("dialect", sa.String(32), nullable=False),
    sa.Column("prompt_version", sa.String(64), nullable=False),
    sa.Column("endpoint", sa.String(100), nullable=False),
    sa.Column("request", sa.JSON, nullable=False),  # the request body (messages, format, params); never a key
    sa.Column("response_text", sa.Text, nullable=False),
    sa.Column("finish_reason", sa.String(32)),
    sa.Column("prompt_tokens", sa.Integer),
    sa.Column("completion_tokens", sa.Integer),
    sa.Column("latency_ms", sa.Float),
    sa.Column("created_at", TS, nullable=False),
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, server_default=""),
    sa.Column("dataset", sa.String(255), nullable=False),
    sa.Column("dataset_fingerprint", sa.String(64), nullable=False, server_default=""),
    sa.Column("endpoint", sa.String(100), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("prompt_version", sa.String(64), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("endpoint_switches", sa.JSON, nullable=False),  # [{at, from_endpoint, ..., reason}]
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.CheckConstraint(_in("status", RUN_STATUSES), name="status"),
)

_COUNTER_COLUMNS = ("llm_calls", "cache_hits", "prompt_tokens", "completion_tokens", "fallbacks", "invalid_ids")

run_users = sa.Table(
    "run_users", metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("worker", sa.String(255)),
    sa.Column("started_at", TS),
    sa.Column("finished_at", TS),
    *[sa.Column(name, sa.Integer, nullable=False, server_default="0") for name in _COUNTER_COLUMNS],
    sa.Column("latency_ms", sa.Float, nullable=False, server_default="0"),
    sa.CheckConstraint(_in("status", USER_STATUSES), name="status"),
    sa.Index(None, "run_id", "status"),
)


def _user_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id", "user_idx"], ["run_users.run_id", "run_users.user_idx"],
                                   ondelete="CASCADE")


stage_results = sa.Table(
    "stage_results", metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("user_idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("stage", sa.String(16), primary_key=True),
    sa.Column("part", sa.String(255), primary_key=True),  # subcategory id for stage "items", '' otherwise
    sa.Column("parser_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("call_keys", sa.JSON, nullable=False),
    sa.Column("output", sa.JSON, nullable=False),
    sa.Column("used_fallback", sa.Boolean, nullable=False),
    sa.Column("invalid_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint(_in("stage", STAGES), name="stage"),
    _user_fk(),
)

edges = sa.Table(
    "edges", metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("user_idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("item_idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("item_id", sa.String(255), nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("score", sa.Float),
    sa.Column("subcategory", sa.String(255), nullable=False, server_default=""),
    sa.Column("from_fallback", sa.Boolean, nullable=False),
    _user_fk(),
)

triplets = sa.Table(
    "triplets", metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("user_idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("pos_idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("neg_idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("pos_id", sa.String(255), nullable=False),
    sa.Column("neg_id", sa.String(255), nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("from_fallback", sa.Boolean, nullable=False),
    _user_fk(),
)


# ---- value types ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CachedCall:
    key: str
    model: str
    dialect: str
    prompt_version: str
    endpoint: str
    request: dict
    response_text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float | None
    created_at: datetime


@dataclass(frozen=True)
class Run:
    id: str
    name: str
    dataset: str
    dataset_fingerprint: str
    endpoint: str
    model: str
    prompt_version: str
    config: dict
    status: str
    endpoint_switches: list[dict]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class UserCounters:
    """What labeling one user cost; summed by :meth:`Store.run_progress`."""
    llm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallbacks: int = 0
    invalid_ids: int = 0
    latency_ms: float = 0.0

    @classmethod
    def of(cls, value: "UserCounters | Mapping[str, Any] | None") -> "UserCounters":
        if value is None or isinstance(value, cls):
            return value or cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown user counter(s) {unknown}; known: {sorted(known)}")
        return cls(**value)


@dataclass(frozen=True)
class RunUser:
    run_id: str
    user_idx: int
    user_id: str
    status: str
    attempts: int
    last_error: str | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    counters: UserCounters


@dataclass(frozen=True)
class StageResult:
    stage: str
    part: str
    output: Any
    parser_version: str
    call_keys: list[str]
    used_fallback: bool
    invalid_count: int
    created_at: datetime


@dataclass(frozen=True)
class Edge:
    """A pseudo edge user -> item to save; ``subcategory`` is the stage-3 node it came from."""
    item_idx: int
    item_id: str
    weight: float
    score: float | None = None
    subcategory: str = ""
    from_fallback: bool = False


@dataclass(frozen=True)
class Triplet:
    """A preference triplet (user prefers pos over neg) to save."""
    pos_idx: int
    neg_idx: int
    pos_id: str
    neg_id: str
    weight: float
    from_fallback: bool = False


@dataclass(frozen=True)
class EdgeRow(Edge):
    """An exported edge: the saved fields plus whose it is."""
    user_idx: int = -1
    user_id: str = ""


@dataclass(frozen=True)
class TripletRow(Triplet):
    user_idx: int = -1
    user_id: str = ""


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    total: int
    by_status: dict[str, int]
    totals: UserCounters  # summed over all users (done or not)
    first_started_at: datetime | None  # over done users
    last_finished_at: datetime | None
    users_per_min: float | None  # done users / (last finish - first start)
    eta_s: float | None  # remaining (pending + running + failed) at that rate

    @property
    def done(self) -> int:
        return self.by_status["done"]

    @property
    def remaining(self) -> int:
        return self.by_status["pending"] + self.by_status["running"] + self.by_status["failed"]


# ---- engine and migrations ------------------------------------------------------------------------

def redact(url: str | sa.URL) -> str:
    """The URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """An engine with the per-backend settings described in the module docstring."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file::memory:"):
        raise StoreError(f"store url {url!r}: in-memory SQLite is not supported (each connection would see "
                         "its own empty database); use a file path such as sqlite:///data/coldlabel.db")
    Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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


def alembic_config(url: str | None = None):
    """The Alembic config for ``migrations/``; ``url`` wins over the ini and the settings."""
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("prepend_sys_path", "")  # the app already imports labeler; leave sys.path alone
    if url:
        cfg.attributes["url"] = url  # not via set_main_option: configparser would choke on '%' in passwords
    return cfg


@lru_cache(maxsize=1)
def _script_directory():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = _script_directory().get_current_head()
    assert head is not None, "migrations/versions is empty"
    return head


def current_revision(url_or_engine: str | Engine) -> str | None:
    """The database's Alembic revision (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def _run_alembic(url: str, action: str, revision: str) -> None:
    from alembic import command

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            # On SQLite this makes the whole migration one BEGIN IMMEDIATE transaction, so two processes
            # upgrading a fresh file at once simply queue and the second finds nothing left to do.
            conn.execution_options(coldlabel_write=True)
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


# ---- helpers --------------------------------------------------------------------------------------

def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _insert(conn: Connection, table: sa.Table):
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{kind} {value!r} is not one of {', '.join(allowed)}")


def _json_safe(name: str, value: Any) -> Any:
    """Fail early, with the field's name, on values JSON cannot hold (instead of deep in the driver)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from None
    return value


def _secret_fields(request: Mapping[str, Any]) -> list[str]:
    """Top-level request fields that name credentials (where OpenAI-style clients would put them). Nested
    keys are not scanned: a JSON schema may legitimately have a property called "headers"."""
    return sorted(str(k) for k in request if str(k).lower() in _SECRET_PARAM_NAMES)


def _row_to_run(row) -> Run:
    return Run(id=row.id, name=row.name, dataset=row.dataset, dataset_fingerprint=row.dataset_fingerprint,
               endpoint=row.endpoint, model=row.model, prompt_version=row.prompt_version, config=row.config,
               status=row.status, endpoint_switches=list(row.endpoint_switches or []),
               created_at=_utc(row.created_at), updated_at=_utc(row.updated_at))


def _row_to_user(row) -> RunUser:
    counters = UserCounters(**{name: getattr(row, name) for name in (*_COUNTER_COLUMNS, "latency_ms")})
    return RunUser(run_id=row.run_id, user_idx=row.user_idx, user_id=row.user_id, status=row.status,
                   attempts=row.attempts, last_error=row.last_error, worker=row.worker,
                   started_at=_utc(row.started_at), finished_at=_utc(row.finished_at), counters=counters)


def _as_dataclass(cls, value):
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**value)
        except TypeError as exc:
            raise ValueError(f"bad {cls.__name__} {dict(value)!r}: {exc}") from None
    raise ValueError(f"expected a {cls.__name__} or a mapping, got {value!r}")


# ---- the store ------------------------------------------------------------------------------------

class Store:
    """All reads and writes of the labeling system. Thread-safe; one per process is plenty.

    ``auto_upgrade`` (default: SQLite yes, PostgreSQL no) decides what happens when the schema is behind.
    """

    def __init__(self, url: str, *, auto_upgrade: bool | None = None) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._pid = os.getpid()
        check_schema(self.engine, url, self.dialect == "sqlite" if auto_upgrade is None else auto_upgrade)

    def __repr__(self) -> str:
        return f"Store({redact(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- connections --
    def _fork_check(self) -> None:
        # Pooled connections must not cross a fork (Celery prefork): the child drops the parent's pool.
        if os.getpid() != self._pid:
            self.engine.dispose(close=False)
            self._pid = os.getpid()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        self._fork_check()
        with self.engine.connect() as conn:
            conn.execution_options(coldlabel_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self._fork_check()
        with self.engine.connect() as conn:
            yield conn

    # -- LLM request cache --
    def get_call(self, key: str) -> CachedCall | None:
        with self._read() as conn:
            row = conn.execute(sa.select(llm_calls).where(llm_calls.c.key == key)).first()
        if row is None:
            return None
        return CachedCall(**{**row._asdict(), "created_at": _utc(row.created_at)})

    def put_call(self, key: str, *, model: str, dialect: str, prompt_version: str, endpoint: str,
                 request: Mapping[str, Any], response_text: str, finish_reason: str | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None,
                 latency_ms: float | None = None) -> bool:
        """Cache one answered request; True if stored, False if the key was already there (not an error:
        two workers may answer the same request at once).

        ``request`` is the body that was sent (messages, response format, sampling params). There is
        deliberately no API-key argument, and a request holding credential-looking fields is refused."""
        if not _KEY_RE.match(key):
            raise ValueError(f"cache key {key!r} must be 64 lowercase hex characters (a sha256 hexdigest)")
        secret = _secret_fields(request)
        if secret:
            raise ValueError(f"request fields {secret} look like credentials; they must not be cached")
        values = dict(key=key, model=model, dialect=dialect, prompt_version=prompt_version, endpoint=endpoint,
                      request=_json_safe("request", dict(request)), response_text=response_text,
                      finish_reason=finish_reason,
                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      latency_ms=latency_ms, created_at=_now())
        with self._write() as conn:
            # RETURNING, not rowcount: SQLAlchemy 2.1 + psycopg report -1 for an INSERT's rowcount.
            stored = conn.execute(_insert(conn, llm_calls).values(**values).on_conflict_do_nothing()
                                  .returning(llm_calls.c.key)).first()
        return stored is not None

    # -- runs --
    def create_run(self, *, dataset: str, endpoint: str, model: str, prompt_version: str,
                   config: Mapping[str, Any], name: str = "", dataset_fingerprint: str = "",
                   run_id: str | None = None) -> Run:
        run_id = run_id or secrets.token_hex(4)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", run_id):
            raise ValueError(f"run id {run_id!r} must be 1-32 letters, digits, '-' or '_'")
        now = _now()
        values = dict(id=run_id, name=name, dataset=dataset, dataset_fingerprint=dataset_fingerprint,
                      endpoint=endpoint, model=model, prompt_version=prompt_version,
                      config=_json_safe("config", dict(config)), status="active", endpoint_switches=[],
                      created_at=now, updated_at=now)
        with self._write() as conn:
            inserted = conn.execute(_insert(conn, runs).values(**values).on_conflict_do_nothing()
                                    .returning(runs.c.id)).first()
        if inserted is None:
            raise StoreError(f"run {run_id!r} already exists; resume it or pick another id")
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> Run:
        with self._read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {redact(self.url)} (see `coldlabel label list`)")
        return _row_to_run(row)

    def list_runs(self, *, dataset: str | None = None, status: str | None = None) -> list[Run]:
        """Newest first."""
        query = sa.select(runs).order_by(runs.c.created_at.desc(), runs.c.id)
        if dataset is not None:
            query = query.where(runs.c.dataset == dataset)
        if status is not None:
            _check_choice("run status", status, RUN_STATUSES)
            query = query.where(runs.c.status == status)
        with self._read() as conn:
            return [_row_to_run(row) for row in conn.execute(query)]

    def set_run_status(self, run_id: str, status: str) -> None:
        _check_choice("run status", status, RUN_STATUSES)
        with self._write() as conn:
            updated = conn.execute(sa.update(runs).where(runs.c.id == run_id)
                                   .values(status=status, updated_at=_now())).rowcount
        if updated != 1:
            raise RunNotFound(f"no run {run_id!r} in {redact(self.url)}")

    def record_endpoint_switch(self, run_id: str, endpoint: str, model: str, reason: str = "") -> Run:
        """Point the run at another endpoint from now on and keep a log of the switch."""
        with self._write() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id).with_for_update()).first()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {redact(self.url)}")
            now = _now()
            switch = {"at": now.isoformat(), "from_endpoint": row.endpoint, "from_model": row.model,
                      "endpoint": endpoint, "model": model, "reason": reason}
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(
                endpoint=endpoint, model=model, updated_at=now,
                endpoint_switches=[*(row.endpoint_switches or []), switch]))
        return self.get_run(run_id)

    def delete_run(self, run_id: str) -> None:
        """Remove a run with its users, stage results and labels (the LLM cache stays)."""
        with self._write() as conn:
            conn.execute(sa.delete(runs).where(runs.c.id == run_id))

    # -- users of a run --
    def add_users(self, run_id: str, users: Iterable[tuple[int, str]]) -> int:
        """Register users as pending; users already there are left alone. Returns how many were new.
        Re-adding an index with a different user id means the dataset changed under the run: refused."""
        users = [(int(idx), str(uid)) for idx, uid in users]
        seen: dict[int, str] = {}
        for idx, uid in users:
            if seen.setdefault(idx, uid) != uid:
                raise ValueError(f"user_idx {idx} given twice with different ids ({seen[idx]!r}, {uid!r})")
        with self._write() as conn:
            if conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).first() is None:
                raise RunNotFound(f"no run {run_id!r} in {redact(self.url)}")
            existing = dict(conn.execute(sa.select(run_users.c.user_idx, run_users.c.user_id)
                                         .where(run_users.c.run_id == run_id)).all())
            clashes = [(idx, existing[idx], uid) for idx, uid in seen.items()
                       if idx in existing and existing[idx] != uid]
            if clashes:
                idx, old, new = clashes[0]
                raise StoreError(f"run {run_id}: user_idx {idx} is {old!r} in the store but {new!r} now "
                                 f"({len(clashes)} such clashes); the dataset changed, start a new run")
            new_rows = [{"run_id": run_id, "user_idx": idx, "user_id": uid}
                        for idx, uid in seen.items() if idx not in existing]
            if new_rows:
                conn.execute(_insert(conn, run_users).on_conflict_do_nothing(), new_rows)
        return len(new_rows)

    def get_user(self, run_id: str, user_idx: int) -> RunUser:
        with self._read() as conn:
            row = conn.execute(sa.select(run_users).where(run_users.c.run_id == run_id,
                                                          run_users.c.user_idx == user_idx)).first()
        if row is None:
            raise StoreError(f"run {run_id}: no user_idx {user_idx} (add_users first)")
        return _row_to_user(row)

    def claim_user(self, run_id: str, user_idx: int, worker: str, *, stale_after_s: float = 0.0) -> bool:
        """Atomically mark a user 'running' for ``worker`` and count the attempt; False when there is
        nothing to do (user done or dead, run not active, or someone else is running it).

        A 'running' user is taken over when it was claimed more than ``stale_after_s`` ago: its worker is
        presumed dead. The default 0 takes over at once, which is right when the caller knows the previous
        owner is gone (a resumed inline run, a redelivered task); a duplicate only costs time because every
        write is idempotent. Queue workers pass the broker's visibility timeout so they do not steal work
        that is still in flight.
        """
        now = _now()
        cutoff = now - timedelta(seconds=stale_after_s)
        claimable = sa.or_(run_users.c.status.in_(("pending", "failed")),
                           sa.and_(run_users.c.status == "running",
                                   sa.or_(run_users.c.started_at.is_(None), run_users.c.started_at <= cutoff)))
        run_active = sa.exists().where(runs.c.id == run_id, runs.c.status == "active")
        with self._write() as conn:
            claimed = conn.execute(
                sa.update(run_users)
                .where(run_users.c.run_id == run_id, run_users.c.user_idx == user_idx, claimable, run_active)
                .values(status="running", attempts=run_users.c.attempts + 1, worker=worker,
                        started_at=now, finished_at=None)
            ).rowcount
            if claimed == 0 and conn.execute(
                    sa.select(run_users.c.user_idx).where(run_users.c.run_id == run_id,
                                                          run_users.c.user_idx == user_idx)).first() is None:
                raise StoreError(f"run {run_id}: no user_idx {user_idx} to claim (add_users first)")
        return claimed == 1

    def finish_user(self, run_id: str, user_idx: int,
                    counters: UserCounters | Mapping[str, Any] | None = None) -> None:
        """Mark a user done and record what it cost."""
        values = asdict(UserCounters.of(counters))
        with self._write() as conn:
            updated = conn.execute(
                sa.update(run_users).where(run_users.c.run_id == run_id, run_users.c.user_idx == user_idx)
                .values(status="done", finished_at=_now(), last_error=None, **values)).rowcount
        if updated != 1:
            raise StoreError(f"run {run_id}: no user_idx {user_idx} to finish")

    def fail_user(self, run_id: str, user_idx: int, error: str, *, dead: bool = False) -> bool:
        """Record a failed attempt: 'failed' (may be claimed again) or 'dead' (dead-lettered, left alone).
        A user that some other attempt already finished stays done; returns False then."""
        with self._write() as conn:
            updated = conn.execute(
                sa.update(run_users).where(run_users.c.run_id == run_id, run_users.c.user_idx == user_idx,
                                           run_users.c.status != "done")
                .values(status="dead" if dead else "failed", last_error=str(error)[:8000],
                        finished_at=_now())).rowcount
        return updated == 1

    def users_by_status(self, run_id: str) -> dict[str, list[int]]:
        """Every status (present or not) -> sorted user indices."""
        out: dict[str, list[int]] = {status: [] for status in USER_STATUSES}
        with self._read() as conn:
            rows = conn.execute(sa.select(run_users.c.status, run_users.c.user_idx)
                                .where(run_users.c.run_id == run_id).order_by(run_users.c.user_idx))
            for status, idx in rows:
                out[status].append(idx)
        return out

    def incomplete_users(self, run_id: str, *, include_dead: bool = False) -> list[int]:
        """Users a resume must (re)enqueue: not done, and not dead unless ``include_dead``."""
        skip = ("done",) if include_dead else ("done", "dead")
        with self._read() as conn:
            return list(conn.execute(
                sa.select(run_users.c.user_idx).where(run_users.c.run_id == run_id,
                                                      run_users.c.status.not_in(skip))
                .order_by(run_users.c.user_idx)).scalars())

    def run_progress(self, run_id: str) -> RunProgress:
        counter_sums = [sa.func.coalesce(sa.func.sum(getattr(run_users.c, name)), 0).label(name)
                        for name in (*_COUNTER_COLUMNS, "latency_ms")]
        with self._read() as conn:
            by_status = {status: 0 for status in USER_STATUSES}
            for status, count in conn.execute(sa.select(run_users.c.status, sa.func.count())
                                              .where(run_users.c.run_id == run_id)
                                              .group_by(run_users.c.status)):
                by_status[status] = count
            sums = conn.execute(sa.select(*counter_sums).where(run_users.c.run_id == run_id)).one()
            first, last = conn.execute(
                sa.select(sa.func.min(run_users.c.started_at), sa.func.max(run_users.c.finished_at))
                .where(run_users.c.run_id == run_id, run_users.c.status == "done")).one()
        first, last = _utc(first), _utc(last)
        totals = UserCounters(**{k: (float(v) if k == "latency_ms" else int(v)) for k, v in sums._asdict().items()})
        per_min = eta = None
        done = by_status["done"]
        if done and first and last and last > first:
            per_min = done / ((last - first).total_seconds() / 60)
            remaining = by_status["pending"] + by_status["running"] + by_status["failed"]
            eta = remaining / per_min * 60
        return RunProgress(run_id=run_id, total=sum(by_status.values()), by_status=by_status, totals=totals,
                           first_started_at=first, last_finished_at=last, users_per_min=per_min, eta_s=eta)

    # -- per-stage results --
    def save_stage(self, run_id: str, user_idx: int, stage: str, output: Any, *, part: str = "",
                   parser_version: str = "", call_keys: Sequence[str] = (), used_fallback: bool = False,
                   invalid_count: int = 0) -> None:
        """Store (or replace) one stage's parsed output for a user, so a resume can skip the stage."""
        _check_choice("stage", stage, STAGES)
        values = dict(run_id=run_id, user_idx=user_idx, stage=stage, part=part, parser_version=parser_version,
                      call_keys=list(call_keys), output=_json_safe(f"stage {stage!r} output", output),
                      used_fallback=bool(used_fallback), invalid_count=int(invalid_count), created_at=_now())
        replace = {k: v for k, v in values.items() if k not in ("run_id", "user_idx", "stage", "part")}
        with self._write() as conn:
            conn.execute(_insert(conn, stage_results).values(**values).on_conflict_do_update(
                index_elements=["run_id", "user_idx", "stage", "part"], set_=replace))

    def load_stages(self, run_id: str, user_idx: int) -> dict[tuple[str, str], StageResult]:
        """(stage, part) -> result; ``part`` is '' except for stage 'items' (the subcategory id)."""
        with self._read() as conn:
            rows = conn.execute(sa.select(stage_results).where(stage_results.c.run_id == run_id,
                                                               stage_results.c.user_idx == user_idx))
            return {(row.stage, row.part): StageResult(
                stage=row.stage, part=row.part, output=row.output, parser_version=row.parser_version,
                call_keys=list(row.call_keys), used_fallback=bool(row.used_fallback),
                invalid_count=row.invalid_count, created_at=_utc(row.created_at)) for row in rows}

    def stage_summary(self, run_id: str) -> dict[str, dict[str, int]]:
        """Per stage: how many answers were stored, how many fell back, how many invented ids were dropped."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(stage_results.c.stage, sa.func.count(),
                          sa.func.sum(sa.cast(stage_results.c.used_fallback, sa.Integer)),
                          sa.func.sum(stage_results.c.invalid_count))
                .where(stage_results.c.run_id == run_id).group_by(stage_results.c.stage))
            return {stage: {"answers": int(n), "fallbacks": int(fb or 0), "invalid_ids": int(inv or 0)}
                    for stage, n, fb, inv in rows}

    # -- labels --
    def save_labels(self, run_id: str, user_idx: int, edges_: Iterable[Edge | Mapping],
                    triplets_: Iterable[Triplet | Mapping]) -> None:
        """Replace a user's edges and triplets in one transaction (saving twice leaves one copy)."""
        edge_list = [_as_dataclass(Edge, e) for e in edges_]
        triplet_list = [_as_dataclass(Triplet, t) for t in triplets_]
        _no_duplicates("edge item_idx", [e.item_idx for e in edge_list], run_id, user_idx)
        _no_duplicates("triplet (pos_idx, neg_idx)", [(t.pos_idx, t.neg_idx) for t in triplet_list],
                       run_id, user_idx)
        key = dict(run_id=run_id, user_idx=user_idx)
        with self._write() as conn:
            # Lock the user's row: two attempts saving the same user at once then queue instead of
            # colliding on the primary key (PostgreSQL; SQLite's IMMEDIATE already serialises writers).
            if conn.execute(sa.select(run_users.c.user_idx).where(
                    run_users.c.run_id == run_id, run_users.c.user_idx == user_idx).with_for_update()).first() is None:
                raise StoreError(f"run {run_id}: no user_idx {user_idx} to save labels for")
            conn.execute(sa.delete(edges).where(edges.c.run_id == run_id, edges.c.user_idx == user_idx))
            conn.execute(sa.delete(triplets).where(triplets.c.run_id == run_id, triplets.c.user_idx == user_idx))
            if edge_list:
                conn.execute(sa.insert(edges), [{**key, **asdict(e)} for e in edge_list])
            if triplet_list:
                conn.execute(sa.insert(triplets), [{**key, **asdict(t)} for t in triplet_list])

    def export_edges(self, run_id: str, batch_size: int = 5000) -> Iterator[EdgeRow]:
        """All edges of a run, ordered by (user_idx, item_idx), streamed."""
        query = (sa.select(edges, run_users.c.user_id).join(run_users, sa.and_(
            run_users.c.run_id == edges.c.run_id, run_users.c.user_idx == edges.c.user_idx))
            .where(edges.c.run_id == run_id).order_by(edges.c.user_idx, edges.c.item_idx))
        for row in self._stream(query, batch_size):
            yield EdgeRow(item_idx=row.item_idx, item_id=row.item_id, weight=row.weight, score=row.score,
                          subcategory=row.subcategory, from_fallback=bool(row.from_fallback),
                          user_idx=row.user_idx, user_id=row.user_id)

    def export_triplets(self, run_id: str, batch_size: int = 5000) -> Iterator[TripletRow]:
        query = (sa.select(triplets, run_users.c.user_id).join(run_users, sa.and_(
            run_users.c.run_id == triplets.c.run_id, run_users.c.user_idx == triplets.c.user_idx))
            .where(triplets.c.run_id == run_id)
            .order_by(triplets.c.user_idx, triplets.c.pos_idx, triplets.c.neg_idx))
        for row in self._stream(query, batch_size):
            yield TripletRow(pos_idx=row.pos_idx, neg_idx=row.neg_idx, pos_id=row.pos_id, neg_id=row.neg_id,
                             weight=row.weight, from_fallback=bool(row.from_fallback),
                             user_idx=row.user_idx, user_id=row.user_id)

    def _stream(self, query, batch_size: int) -> Iterator[Any]:
        with self._read() as conn:
            result = conn.execution_options(yield_per=batch_size).execute(query)
            yield from result


def _no_duplicates(what: str, keys: list, run_id: str, user_idx: int) -> None:
    seen: set = set()
    dups = sorted({k for k in keys if k in seen or seen.add(k)})
    if dups:
        raise ValueError(f"run {run_id} user_idx {user_idx}: duplicate {what} {dups[:5]} in save_labels")
