"""The LLM request cache: one row per answered request, keyed by the caller's content hash.

The key is made by ``labeler.client.cache_key`` from everything that decides an answer (model, dialect,
messages, schema, sampling parameters, prompt version) and nothing else, as curator does; a hit means no HTTP
request. Only answers the caller found usable are stored (``labeler.client``), and a row the caller judges
unusable when reading it is replaced by the next answer. Credentials never reach this table: a request
holding credential-looking fields is refused.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import sqlalchemy as sa

from coldlabel.store.engine import as_utc, dialect_insert, json_safe, now_utc
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



class RequestCache:
    """Mixin of :class:`coldlabel.store.Store`: reads and writes of ``llm_calls``."""

    def get_call(self, key: str) -> CachedCall | None:
        with self._read() as conn:
            row = conn.execute(sa.select(llm_calls).where(llm_calls.c.key == key)).first()
        if row is None:
            return None
        return CachedCall(**{**row._asdict(), "created_at": as_utc(row.created_at)})

    def put_call(self, key: str, *, model: str, dialect: str, prompt_version: str, endpoint: str,
                 request: Mapping[str, Any], response_text: str, finish_reason: str | None = None,
                 prompt_tokens: int | None = None, completion_tokens: int | None = None,
                 latency_ms: float | None = None, replace: bool = False) -> bool:
        """Cache one answered request; True if stored, False if the key was already there (not an error:
        two workers may answer the same request at once). ``replace`` overwrites a row already there (the
        caller found it unusable).

        ``request`` is the body that was sent (messages, response format, sampling params). There is
        deliberately no API-key argument, and a request holding credential-looking fields is refused."""
        if not _KEY_RE.match(key):
            raise ValueError(f"cache key {key!r} must be 64 lowercase hex characters (a sha256 hexdigest)")
        secret = _secret_fields(request)
        if secret:
            raise ValueError(f"request fields {secret} look like credentials; they must not be cached")
        values = dict(key=key, model=model, dialect=dialect, prompt_version=prompt_version, endpoint=endpoint,
                      request=json_safe("request", dict(request)), response_text=response_text,
                      finish_reason=finish_reason,
                      prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                      latency_ms=latency_ms, created_at=now_utc())
        with self._write() as conn:
            insert = dialect_insert(conn, llm_calls).values(**values)
            if replace:
                insert = insert.on_conflict_do_update(index_elements=["key"],
                                                      set_={k: v for k, v in values.items() if k != "key"})
            else:
                insert = insert.on_conflict_do_nothing()
            # RETURNING, not rowcount: SQLAlchemy 2.1 + psycopg report -1 for an INSERT's rowcount.
            stored = conn.execute(insert.returning(llm_calls.c.key)).first()
        return stored is not None
