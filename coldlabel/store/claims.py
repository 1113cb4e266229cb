"""A user's claim: who works on it, for how long (a lease), and how it ended. Every transition is one
conditional UPDATE, so two workers racing for the same user cannot both win.

A user moves ``pending → running → done``, or to ``failed`` (claimable again) or ``dead`` (dead-lettered,
left alone until ``label resume``). A claim holds a **lease** (``lease_expires_at``) that its worker renews
while it works (:meth:`renew_claims`, every ``workers.lease_s / 3``). A worker that dies stops renewing; the
reaper (:meth:`reap_expired_claims`, in every worker and inline run) turns its expired claims back into
pending users within about a minute, instead of the broker's visibility timeout. A ``failed`` user waiting
for a scheduled retry holds a lease too, so a retry message that got lost is re-sent the same way.
"""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from coldlabel.errors import StoreError
from coldlabel.store.engine import now_utc
from coldlabel.store.records import UserCounters
from coldlabel.store.schema import run_users, runs

REAPED = "its claim expired (the worker stopped renewing it, presumably dead): re-enqueued"


class ClaimRepository:
    """Mixin of :class:`coldlabel.store.Store`: claims, leases and outcomes of ``run_users``."""

    def claim_user(self, run_id: str, user_idx: int, worker: str, *, lease_s: float,
                   takeover: bool = False) -> bool:
        """Atomically mark a user 'running' for ``worker`` with a lease of ``lease_s`` and count the
        attempt; False when there is nothing to do (user done or dead, run not active, or another worker
        holds a live lease on it).

        The same worker claiming again (it waited out a store outage) keeps its attempt count. ``takeover``
        claims even a live lease: only for a foreground command that knows nobody else works on the user.
        """
        now = now_utc()
        mine = sa.and_(run_users.c.status == "running", run_users.c.worker == worker)
        running_free = sa.or_(sa.true() if takeover else sa.false(), run_users.c.worker == worker,
                              run_users.c.lease_expires_at.is_(None), run_users.c.lease_expires_at <= now)
        claimable = sa.or_(run_users.c.status.in_(("pending", "failed")),
                           sa.and_(run_users.c.status == "running", running_free))
        run_active = sa.exists().where(runs.c.id == run_id, runs.c.status == "active")
        with self._write() as conn:
            claimed = conn.execute(
                sa.update(run_users)
                .where(run_users.c.run_id == run_id, run_users.c.user_idx == user_idx, claimable, run_active)
                .values(status="running", worker=worker, finished_at=None,
                        attempts=run_users.c.attempts + sa.case((mine, 0), else_=1),
                        started_at=sa.case((mine, run_users.c.started_at), else_=now),
                        lease_expires_at=now + timedelta(seconds=lease_s))
            ).rowcount
            if claimed == 0 and conn.execute(
                    sa.select(run_users.c.user_idx).where(run_users.c.run_id == run_id,
                                                          run_users.c.user_idx == user_idx)).first() is None:
                raise StoreError(f"run {run_id}: no user_idx {user_idx} to claim (add_users first)")
        return claimed == 1

    def renew_claims(self, claims: Iterable[tuple[str, int, str]], lease_s: float) -> list[tuple[str, int, str]]:
        """Extend the leases of ``(run_id, user_idx, worker)`` claims still held by that worker; returns the
        ones taken away: reaped (back to 'pending') or claimed by another worker since. A claim its holder
        has just finished (done, failed, dead) is not lost: the keeper may run between finish and release."""
        claims = list(claims)
        lost = []
        expires = now_utc() + timedelta(seconds=lease_s)
        with self._write() as conn:
            for run_id, user_idx, worker in claims:
                where = (run_users.c.run_id == run_id, run_users.c.user_idx == user_idx)
                renewed = conn.execute(
                    sa.update(run_users).where(*where, run_users.c.status == "running", run_users.c.worker == worker)
                    .values(lease_expires_at=expires)).rowcount
                if renewed == 1:
                    continue
                now = conn.execute(sa.select(run_users.c.status, run_users.c.worker).where(*where)).first()
                if now is None or now.status == "pending" or (now.status == "running" and now.worker != worker):
                    lost.append((run_id, user_idx, worker))
        return lost

    def reap_expired_claims(self, run_id: str | None = None, now: datetime | None = None) -> list[tuple[str, int]]:
        """Expired leases of active runs (of ``run_id`` only, if given) back to claimable: a 'running' user
        becomes 'pending', a 'failed' one keeps its status and loses the lease. Returns ``(run_id,
        user_idx)`` of every user reaped, for the caller to enqueue again; each is reaped by one caller only."""
        now = now or now_utc()
        where = [run_users.c.status.in_(("running", "failed")), run_users.c.lease_expires_at.is_not(None),
                 run_users.c.lease_expires_at < now,
                 run_users.c.run_id.in_(sa.select(runs.c.id).where(runs.c.status == "active"))]
        if run_id is not None:
            where.append(run_users.c.run_id == run_id)
        running = run_users.c.status == "running"
        with self._write() as conn:
            rows = conn.execute(
                sa.update(run_users).where(*where)
                .values(status=sa.case((running, "pending"), else_=run_users.c.status),
                        last_error=sa.case((running, REAPED), else_=run_users.c.last_error),
                        lease_expires_at=None)
                .returning(run_users.c.run_id, run_users.c.user_idx)).all()
        return sorted((r, u) for r, u in rows)

    def finish_user(self, run_id: str, user_idx: int,
                    counters: UserCounters | Mapping[str, Any] | None = None) -> None:
        """Mark a user done, record what it cost, and reset the run's circuit breaker (a user got through)."""
        values = asdict(UserCounters.of(counters))
        with self._write() as conn:
            updated = conn.execute(
                sa.update(run_users).where(run_users.c.run_id == run_id, run_users.c.user_idx == user_idx)
                .values(status="done", finished_at=now_utc(), last_error=None, lease_expires_at=None,
                        **values)).rowcount
            conn.execute(sa.update(runs).where(runs.c.id == run_id, runs.c.consecutive_failures > 0)
                         .values(consecutive_failures=0))
        if updated != 1:
            raise StoreError(f"run {run_id}: no user_idx {user_idx} to finish")

    def fail_user(self, run_id: str, user_idx: int, error: str, *, dead: bool = False,
                  retry_within_s: float | None = None) -> bool:
        """Record a failed attempt: 'failed' (may be claimed again) or 'dead' (dead-lettered, left alone).
        ``retry_within_s``: a retry is scheduled; if nobody has claimed the user by then, the reaper sends
        it again. A user that some other attempt already finished stays done; returns False then."""
        now = now_utc()
        lease = None if dead or retry_within_s is None else now + timedelta(seconds=retry_within_s)
        with self._write() as conn:
            updated = conn.execute(
                sa.update(run_users).where(run_users.c.run_id == run_id, run_users.c.user_idx == user_idx,
                                           run_users.c.status != "done")
                .values(status="dead" if dead else "failed", last_error=str(error)[:8000],
                        finished_at=now, lease_expires_at=lease)).rowcount
        return updated == 1
