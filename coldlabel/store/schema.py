"""The tables, as SQLAlchemy Core metadata. Alembic (``migrations/``) owns the schema; this mirrors it and
``tests/test_migrations.py`` checks the two never drift."""
from __future__ import annotations

from dataclasses import fields
from typing import Sequence

import sqlalchemy as sa

from coldlabel.store.records import UserCounters

# active -> done | degraded | failed when every user is settled (labeler/runs.py decides); paused by a
# permanent endpoint error, the circuit breaker or a changed dataset; cancelled by hand. `label resume` re-activates.
RUN_STATUSES = ("active", "paused", "cancelled", "done", "degraded", "failed")
USER_STATUSES = ("pending", "running", "done", "failed", "dead")
LABEL_STAGES = ("profile", "categories", "subcategories", "items", "rerank")  # the five labeling stages

# Named constraints so that Alembic (and SQLite batch mode) can always refer to them.
metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

TS = sa.DateTime(timezone=True)  # always written as aware UTC; SQLite hands back naive UTC, see engine.as_utc()


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
    sa.Column("status_reason", sa.Text),  # why the run is paused, degraded or failed (shown by `label status`)
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),  # the circuit breaker
    sa.Column("endpoint_switches", sa.JSON, nullable=False),  # [{at, from_endpoint, ..., reason}]
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.CheckConstraint(_in("status", RUN_STATUSES), name="status"),
)

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
    # A claim ('running') or a scheduled retry ('failed') holds a lease; expired leases are reaped.
    sa.Column("lease_expires_at", TS),
    *[sa.Column(f.name, sa.Float if f.type in (float, "float") else sa.Integer, nullable=False,
                server_default="0") for f in fields(UserCounters)],
    sa.CheckConstraint(_in("status", USER_STATUSES), name="status"),
    sa.Index(None, "run_id", "status"),
    sa.Index(None, "status", "lease_expires_at"),
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
    sa.CheckConstraint(_in("stage", LABEL_STAGES), name="stage"),
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
