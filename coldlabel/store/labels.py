"""Per-stage results and final labels of each user: what a resume skips and what the trainer reads.

``stage_results`` holds each stage's parsed answer (with the parser version and the cache keys of the calls
behind it), so a redelivered user continues from its last finished stage and a newer parser can re-parse
stored answers without a single new call. ``edges`` and ``triplets`` are replaced per user in one
transaction: saving twice leaves one copy.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from coldlabel.errors import StoreError
from coldlabel.store.cache import call_row, insert_call
from coldlabel.store.engine import as_utc, check_choice, json_safe, now_utc
from coldlabel.store.records import Edge, EdgeRow, StageRecord, Triplet, TripletRow
from coldlabel.store.schema import LABEL_STAGES, edges, run_users, stage_results, triplets


def _as_dataclass(cls, value):
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        try:
            return cls(**value)
        except TypeError as exc:
            raise ValueError(f"bad {cls.__name__} {dict(value)!r}: {exc}") from None
    raise ValueError(f"expected a {cls.__name__} or a mapping, got {value!r}")


def _no_duplicates(what: str, keys: list, run_id: str, user_idx: int) -> None:
    seen: set = set()
    dups = sorted({k for k in keys if k in seen or seen.add(k)})
    if dups:
        raise ValueError(f"run {run_id} user_idx {user_idx}: duplicate {what} {dups[:5]} in save_labels")


_UPSERTS: dict[str, sa.Insert] = {}
_STAGE_KEY = ("run_id", "user_idx", "stage", "part")


def _upsert_stage(dialect: str):
    """INSERT .. ON CONFLICT DO UPDATE of one stage row, values bound at execute time; built once per
    dialect (building it per call cost more CPU than the write)."""
    if dialect not in _UPSERTS:
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(stage_results)
        _UPSERTS[dialect] = insert.on_conflict_do_update(
            index_elements=list(_STAGE_KEY),
            set_={c.name: insert.excluded[c.name] for c in stage_results.c if c.name not in _STAGE_KEY})
    return _UPSERTS[dialect]


class LabelRepository:
    """Mixin of :class:`coldlabel.store.Store`: ``stage_results``, ``edges`` and ``triplets``."""

    def save_stage(self, run_id: str, user_idx: int, stage: str, output: Any, *, part: str = "",
                   parser_version: str = "", call_keys: Sequence[str] = (), used_fallback: bool = False,
                   invalid_count: int = 0, calls: Sequence[Mapping[str, Any]] = ()) -> None:
        """Store (or replace) one stage's parsed output for a user, so a resume can skip the stage.

        ``calls``: the answers behind it to cache, each as :meth:`put_call`'s keyword arguments, stored in
        the same transaction (one write per stage instead of one per call plus one per stage), with
        ``put_call``'s checks and meaning (a key already cached is kept unless ``replace``)."""
        check_choice("stage", stage, LABEL_STAGES)
        values = dict(run_id=run_id, user_idx=user_idx, stage=stage, part=part, parser_version=parser_version,
                      call_keys=list(call_keys), output=json_safe(f"stage {stage!r} output", output),
                      used_fallback=bool(used_fallback), invalid_count=int(invalid_count), created_at=now_utc())
        rows = [(call_row(**{k: v for k, v in call.items() if k != "replace"}), bool(call.get("replace")))
                for call in calls]
        with self._write() as conn:
            for row, replace in rows:
                insert_call(conn, row, replace)
            conn.execute(_upsert_stage(conn.dialect.name), values)

    def load_stages(self, run_id: str, user_idx: int) -> dict[tuple[str, str], StageRecord]:
        """(stage, part) -> result; ``part`` is '' except for stage 'items' (the subcategory id)."""
        with self._read() as conn:
            rows = conn.execute(sa.select(stage_results).where(stage_results.c.run_id == run_id,
                                                               stage_results.c.user_idx == user_idx))
            return {(row.stage, row.part): StageRecord(
                stage=row.stage, part=row.part, output=row.output, parser_version=row.parser_version,
                call_keys=list(row.call_keys), used_fallback=bool(row.used_fallback),
                invalid_count=row.invalid_count, created_at=as_utc(row.created_at)) for row in rows}

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
