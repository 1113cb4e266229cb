"""Keeping claims alive: one thread per process renews the lease of every user this process works on.

A claim in SQL carries ``lease_expires_at``. While a user is in progress its lease is renewed every
``workers.lease_s / 3`` seconds by this thread, not by the labeling code: a user blocked in a long LLM call
or waiting out a store outage keeps its claim, and a process that dies (SIGKILL, OOM, power) simply stops
renewing, so its claims expire and the reaper hands them to someone else. When the store is unreachable
the thread retries every second, so leases are renewed as soon as it is back.
"""
from __future__ import annotations

import logging
import os
import threading
import time

from coldlabel.store import Store

log = logging.getLogger("coldlabel.leases")

Claim = tuple[str, int, str]  # (run_id, user_idx, worker)


class LeaseKeeper:
    """Renews the leases of the claims it holds, from a daemon thread started on first use."""

    def __init__(self, store: Store, lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s
        self._held: set[Claim] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failing = False  # the store is away: say so once, and once when it is back

    def hold(self, claim: Claim) -> None:
        with self._lock:
            self._held.add(claim)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.discard(claim)

    def held(self) -> set[Claim]:
        with self._lock:
            return set(self._held)

    def renew_now(self) -> bool:
        """Renew every held lease once; False when the store could not be reached."""
        claims = self.held()
        if not claims:
            return True
        try:
            lost = self.store.renew_claims(claims, self.lease_s)
        except Exception as exc:  # the store is away (or worse): keep the claims, try again soon
            if not self._failing:
                log.warning("could not renew %d claim lease(s), retrying every second: %s", len(claims), exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("claim leases renewed again (%d)", len(claims))
            self._failing = False
        for run_id, user_idx, worker in set(lost) & self.held():  # (a claim finished meanwhile is no news)
            log.warning("run %s user %s: %s no longer holds the claim (reaped after its lease expired)",
                        run_id, user_idx, worker)
        return True

    def _run(self) -> None:
        interval = self.lease_s / 3
        while True:
            ok = self.renew_now()
            time.sleep(interval if ok else min(1.0, interval))


_KEEPERS: dict[tuple[int, int, float], LeaseKeeper] = {}
_KEEPERS_LOCK = threading.Lock()


def lease_keeper(store: Store, lease_s: float) -> LeaseKeeper:
    """The keeper of this process for ``store`` (a forked child gets its own: threads do not survive a fork)."""
    key = (os.getpid(), id(store), lease_s)
    with _KEEPERS_LOCK:
        if key not in _KEEPERS:
            _KEEPERS[key] = LeaseKeeper(store, lease_s)
        return _KEEPERS[key]
