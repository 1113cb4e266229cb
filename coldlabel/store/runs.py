"""Runs and their users: creation, status, the circuit breaker, progress. A run's truth lives here, never in a
queue. A user's claim and outcome are ``claims.py``.

A run is ``active`` until every user is settled, then ``done``, ``degraded`` or ``failed`` (the labeler
decides which); ``paused`` (a permanent endpoint error, the circuit breaker, a changed dataset) and
``cancelled`` stop it until ``label resume``. Every status change is one conditional UPDATE.
"""
from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from coldlabel.errors import RunNotFound, StoreError
from coldlabel.store.engine import as_utc, check_choice, dialect_insert, json_safe, now_utc, redact
from coldlabel.store.records import Run, RunProgress, RunUser, UserCounters
from coldlabel.store.schema import RUN_STATUSES, USER_STATUSES, run_users, runs


def _row_to_run(row) -> Run:
    return Run(id=row.id, name=row.name, dataset=row.dataset, dataset_fingerprint=row.dataset_fingerprint,
               endpoint=row.endpoint, model=row.model, prompt_version=row.prompt_version, config=row.config,
               status=row.status, endpoint_switches=list(row.endpoint_switches or []),
               created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at), status_reason=row.status_reason)


def _row_to_user(row) -> RunUser:
    counters = UserCounters(**{name: getattr(row, name) for name in UserCounters.names()})
    return RunUser(run_id=row.run_id, user_idx=row.user_idx, user_id=row.user_id, status=row.status,
                   attempts=row.attempts, last_error=row.last_error, worker=row.worker,
                   started_at=as_utc(row.started_at), finished_at=as_utc(row.finished_at), counters=counters,
                   lease_expires_at=as_utc(row.lease_expires_at))


class RunRepository:
    """Mixin of :class:`coldlabel.store.Store`: reads and writes of ``runs`` and ``run_users``."""

    def create_run(self, *, dataset: str, endpoint: str, model: str, prompt_version: str,
                   config: Mapping[str, Any], name: str = "", dataset_fingerprint: str = "",
                   run_id: str | None = None) -> Run:
        run_id = run_id or secrets.token_hex(4)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", run_id):
            raise ValueError(f"run id {run_id!r} must be 1-32 letters, digits, '-' or '_'")
        now = now_utc()
        values = dict(id=run_id, name=name, dataset=dataset, dataset_fingerprint=dataset_fingerprint,
                      endpoint=endpoint, model=model, prompt_version=prompt_version,
                      config=json_safe("config", dict(config)), status="active", endpoint_switches=[],
                      created_at=now, updated_at=now)
        with self._write() as conn:
            inserted = conn.execute(dialect_insert(conn, runs).values(**values).on_conflict_do_nothing()
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
            check_choice("run status", status, RUN_STATUSES)
            query = query.where(runs.c.status == status)
        with self._read() as conn:
            return [_row_to_run(row) for row in conn.execute(query)]

    def set_run_status(self, run_id: str, status: str, reason: str | None = None) -> None:
        """Set the status unconditionally (``label resume``/``cancel``); an active run forgets its breaker count."""
        check_choice("run status", status, RUN_STATUSES)
        values: dict[str, Any] = dict(status=status, status_reason=reason, updated_at=now_utc())
        if status == "active":
            values["consecutive_failures"] = 0
        with self._write() as conn:
            updated = conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values)).rowcount
        if updated != 1:
            raise RunNotFound(f"no run {run_id!r} in {redact(self.url)}")

    def end_run(self, run_id: str, status: str, reason: str | None = None) -> bool:
        """Move an *active* run to ``status`` (paused, done, degraded, failed); False when it was not active
        any more (another worker ended or paused it first, or someone cancelled it)."""
        check_choice("run status", status, RUN_STATUSES)
        with self._write() as conn:
            return conn.execute(sa.update(runs).where(runs.c.id == run_id, runs.c.status == "active")
                                .values(status=status, status_reason=reason, updated_at=now_utc())).rowcount == 1

    def note_transport_failure(self, run_id: str, threshold: int, reason: str) -> bool:
        """Count one more user in a row that failed on transport errors; at ``threshold`` pause the run with
        ``reason``. True when this call paused it. A finished user resets the count (``finish_user``)."""
        with self._write() as conn:
            count = conn.execute(sa.update(runs).where(runs.c.id == run_id)
                                 .values(consecutive_failures=runs.c.consecutive_failures + 1)
                                 .returning(runs.c.consecutive_failures)).scalar()
            if count is None or count < threshold:
                return False
            return conn.execute(sa.update(runs).where(runs.c.id == run_id, runs.c.status == "active")
                                .values(status="paused", status_reason=reason, updated_at=now_utc())).rowcount == 1

    def record_endpoint_switch(self, run_id: str, endpoint: str, model: str, reason: str = "") -> Run:
        """Point the run at another endpoint from now on and keep a log of the switch."""
        with self._write() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id).with_for_update()).first()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {redact(self.url)}")
            now = now_utc()
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
                conn.execute(dialect_insert(conn, run_users).on_conflict_do_nothing(), new_rows)
        return len(new_rows)

    def get_user(self, run_id: str, user_idx: int) -> RunUser:
        with self._read() as conn:
            row = conn.execute(sa.select(run_users).where(run_users.c.run_id == run_id,
                                                          run_users.c.user_idx == user_idx)).first()
        if row is None:
            raise StoreError(f"run {run_id}: no user_idx {user_idx} (add_users first)")
        return _row_to_user(row)

    def users_by_status(self, run_id: str) -> dict[str, list[int]]:
        """Every status (present or not) -> sorted user indices."""
        out: dict[str, list[int]] = {status: [] for status in USER_STATUSES}
        with self._read() as conn:
            rows = conn.execute(sa.select(run_users.c.status, run_users.c.user_idx)
                                .where(run_users.c.run_id == run_id).order_by(run_users.c.user_idx))
            for status, idx in rows:
                out[status].append(idx)
        return out

    def has_users_left(self, run_id: str) -> bool:
        """Is any user still to be labeled (pending, running or failed)? Cheap: an EXISTS on the index."""
        with self._read() as conn:
            return bool(conn.execute(sa.select(sa.exists().where(
                run_users.c.run_id == run_id, run_users.c.status.in_(("pending", "running", "failed"))))).scalar())

    def incomplete_users(self, run_id: str, *, include_dead: bool = False) -> list[int]:
        """Users a resume must (re)enqueue: not done, and not dead unless ``include_dead``."""
        skip = ("done",) if include_dead else ("done", "dead")
        with self._read() as conn:
            return list(conn.execute(
                sa.select(run_users.c.user_idx).where(run_users.c.run_id == run_id,
                                                      run_users.c.status.not_in(skip))
                .order_by(run_users.c.user_idx)).scalars())

    def run_progress(self, run_id: str, now: datetime | None = None) -> RunProgress:
        """Counts, cost and pace. A 'running' user whose lease expired counts as ``stalled``, not in flight;
        while users remain, the pace is measured up to ``now``, so a run that stopped moving shows it."""
        now = now or now_utc()
        counter_sums = [sa.func.coalesce(sa.func.sum(getattr(run_users.c, name)), 0).label(name)
                        for name in UserCounters.names()]
        expired = sa.and_(run_users.c.status == "running", run_users.c.lease_expires_at.is_not(None),
                          run_users.c.lease_expires_at < now)
        with self._read() as conn:
            by_status = {status: 0 for status in USER_STATUSES}
            stalled = 0
            for status, is_expired, count in conn.execute(
                    sa.select(run_users.c.status, expired.label("expired"), sa.func.count())
                    .where(run_users.c.run_id == run_id).group_by(run_users.c.status, "expired")):
                if is_expired:
                    stalled += count
                else:
                    by_status[status] += count
            sums = conn.execute(sa.select(*counter_sums).where(run_users.c.run_id == run_id)).one()
            first, last = conn.execute(
                sa.select(sa.func.min(run_users.c.started_at), sa.func.max(run_users.c.finished_at))
                .where(run_users.c.run_id == run_id, run_users.c.status == "done")).one()
        first, last = as_utc(first), as_utc(last)
        totals = UserCounters(**{k: (float(v) if k == "latency_ms" else int(v)) for k, v in sums._asdict().items()})
        per_min = eta = None
        done = by_status["done"]
        remaining = by_status["pending"] + by_status["running"] + by_status["failed"] + stalled
        end = max(last, now) if (remaining and last) else last
        if done and first and end and end > first:
            per_min = done / ((end - first).total_seconds() / 60)
            eta = remaining / per_min * 60
        return RunProgress(run_id=run_id, total=sum(by_status.values()) + stalled, by_status=by_status,
                           totals=totals, first_started_at=first, last_finished_at=last, users_per_min=per_min,
                           eta_s=eta, stalled=stalled)

    def user_errors(self, run_id: str, limit: int = 5) -> list[tuple[int, str, str | None]]:
        """(user_idx, status, last_error) of a few failed or dead users, lowest index first."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(run_users.c.user_idx, run_users.c.status, run_users.c.last_error)
                .where(run_users.c.run_id == run_id, run_users.c.status.in_(("failed", "dead")))
                .order_by(run_users.c.user_idx).limit(limit)).all()
        return [tuple(r) for r in rows]
