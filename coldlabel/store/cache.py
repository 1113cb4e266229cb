"""The LLM request cache: one row per answered request, keyed by the caller's content hash.

The key is made by ``labeler.client.cache_key`` from everything that decides an answer (model, dialect,
messages, schema, sampling parameters, prompt version) and nothing else, as curator does; a hit means no HTTP
request. Only answers the caller found usable are stored (``labeler.client``), and a row the caller judges
unusable when reading it is replaced by the next answer. Credentials never reach this table: a request
holding credential-looking fields is refused.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from coldlabel.store.engine import as_utc, json_safe, now_utc
from coldlabel.store.records import CachedCall
from coldlabel.store.schema import llm_calls

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
# Request fields that would carry credentials; the cache must never store them.
_SECRET_PARAM_NAMES = {"api_key", "apikey", "authorization", "headers", "extra_headers", "default_headers",
                       "extra_query"}


def _secret_fields(request: Mapping[str, Any]) -> list[str]:
    """Top-level request fields that name credentials (where OpenAI-style clients would put them). Nested
    keys are not scanned: a JSON schema may legitimately have a property called "headers"."""
    return sorted(str(k) for k in request if str(k).lower() in _SECRET_PARAM_NAMES)



def _insert(dialect: str, replace: bool):
    """The INSERT of one ``llm_calls`` row (values bound at execute time), built once per dialect and mode:
    building it per call (``.values(...)`` + ON CONFLICT) cost more CPU than the SQLite round trip itself."""
    key = (dialect, replace)
    if key not in _INSERTS:
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(llm_calls)
        if replace:
            insert = insert.on_conflict_do_update(
                index_elements=["key"], set_={c.name: insert.excluded[c.name] for c in llm_calls.c if c.name != "key"})
        else:
            insert = insert.on_conflict_do_nothing()
        # RETURNING, not rowcount: SQLAlchemy 2.1 + psycopg report -1 for an INSERT's rowcount.
        _INSERTS[key] = insert.returning(llm_calls.c.key)
    return _INSERTS[key]


_INSERTS: dict[tuple[str, bool], sa.Insert] = {}
_SELECT = sa.select(llm_calls).where(llm_calls.c.key == sa.bindparam("key"))
_SELECT_MANY = sa.select(llm_calls).where(llm_calls.c.key.in_(sa.bindparam("keys", expanding=True)))


def call_row(key: str, *, model: str, dialect: str, prompt_version: str, endpoint: str,
             request: Mapping[str, Any], response_text: str, finish_reason: str | None = None,
             prompt_tokens: int | None = None, completion_tokens: int | None = None,
             latency_ms: float | None = None) -> dict[str, Any]:
    """The checked ``llm_calls`` row of one answered request (see :meth:`RequestCache.put_call`)."""
    if not _KEY_RE.match(key):
        raise ValueError(f"cache key {key!r} must be 64 lowercase hex characters (a sha256 hexdigest)")
    secret = _secret_fields(request)
    if secret:
        raise ValueError(f"request fields {secret} look like credentials; they must not be cached")
    return dict(key=key, model=model, dialect=dialect, prompt_version=prompt_version, endpoint=endpoint,
                request=json_safe("request", dict(request)), response_text=response_text,
                finish_reason=finish_reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                latency_ms=latency_ms, created_at=now_utc())


def insert_call(conn: Connection, row: Mapping[str, Any], replace: bool = False) -> bool:
    """Insert one checked row (:func:`call_row`) inside the caller's transaction; True if stored."""
    return conn.execute(_insert(conn.dialect.name, replace), dict(row)).first() is not None


class RequestCache:
    """Mixin of :class:`coldlabel.store.Store`: reads and writes of ``llm_calls``."""

    def get_call(self, key: str) -> CachedCall | None:
        with self._read() as conn:
            row = conn.execute(_SELECT, {"key": key}).first()
        if row is None:
            return None
        return CachedCall(**{**row._asdict(), "created_at": as_utc(row.created_at)})

    def get_calls(self, keys: Sequence[str]) -> dict[str, CachedCall]:
        """The cached rows of ``keys`` (those there are), in one query."""
        if not keys:
            return {}
        with self._read() as conn:
            rows = conn.execute(_SELECT_MANY, {"keys": list(dict.fromkeys(keys))}).all()
        return {row.key: CachedCall(**{**row._asdict(), "created_at": as_utc(row.created_at)}) for row in rows}

    def put_call(self, key: str, *, model: str, dialect: str, prompt_version: str, endpoint: str,
                 request: Mapping[str, Any], response_text: str, finish_reason: str | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None,
                 latency_ms: float | None = None, replace: bool = False) -> bool:
        """Cache one answered request; True if stored, False if the key was already there (not an error:
        two workers may answer the same request at once). ``replace`` overwrites a row already there (the
        caller found it unusable).

        ``request`` is the body that was sent (messages, response format, sampling params). There is
        deliberately no API-key argument, and a request holding credential-looking fields is refused."""
        row = call_row(key, model=model, dialect=dialect, prompt_version=prompt_version, endpoint=endpoint,
                       request=request, response_text=response_text, finish_reason=finish_reason,
                       prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_ms=latency_ms)
        with self._write() as conn:
            return insert_call(conn, row, replace)
