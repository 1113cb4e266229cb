"""The reaper: users whose worker died go back to work within about a minute, not after the broker's timeout.

A worker that dies stops renewing the leases of its claims (``labeler/leases.py``). Every ``coldlabel
worker`` (a thread started once it is ready) and every inline run looks for expired leases every
``workers.reap_interval_s``, turns them back into claimable users (``Store.reap_expired_claims``: each user
is reaped by one reaper only) and dispatches them again. A killed worker's users are therefore re-run
within ``workers.lease_s + workers.reap_interval_s`` (45 s at the defaults).

After a store outage nobody could renew a lease, so every claim may look expired; the reaper then waits half
a lease before reaping, long enough for the workers that are alive to renew theirs.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from coldlabel.config import Settings
from coldlabel.errors import Unavailable
from coldlabel.store import Store

log = logging.getLogger("coldlabel.reaper")

Dispatch = Callable[[list[tuple[str, int]]], None]  # (run_id, user_idx) pairs to label again


class Reaper:
    """Reaps expired claims (of one run, or of every active run) and hands them to ``dispatch``."""

    def __init__(self, store: Callable[[], Store], settings: Settings, dispatch: Dispatch | None = None,
                 run_id: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store  # called on every tick: a worker may start its reaper before the store answers
        self.settings = settings
        self.dispatch = dispatch
        self.run_id = run_id
        self._clock = clock
        self._store_was_down = False
        self._hold_until = 0.0
        self._undelivered: list[tuple[str, int]] = []  # reaped, but the dispatch failed: tried again
        self._stop = threading.Event()

    def tick(self) -> list[tuple[str, int]]:
        """One look: the users reaped now (already dispatched when there is a ``dispatch``)."""
        try:
            store = self._store()
            if self._store_was_down:
                store.ping()
                self._store_was_down = False
                self._hold_until = self._clock() + self.settings.workers.lease_s / 2
                log.info("store is back; reaping again in %.0fs", self.settings.workers.lease_s / 2)
            if self._clock() < self._hold_until:
                return []
            reaped = store.reap_expired_claims(self.run_id)
        except Unavailable as exc:
            self._store_was_down = True
            log.warning("reaper: %s", exc)
            return []
        if reaped:
            log.warning("%d claim(s) expired, their users go back to work: %s", len(reaped),
                        ", ".join(f"{r}/{u}" for r, u in reaped[:10]))
        self._deliver(reaped)
        return reaped

    def _deliver(self, reaped: list[tuple[str, int]]) -> None:
        pending = self._undelivered + reaped
        if self.dispatch is None or not pending:
            return
        try:
            self.dispatch(pending)
            self._undelivered = []
        except Exception as exc:  # the broker is away: keep them and try again next tick
            log.warning("could not re-enqueue %d reaped user(s) (%s); will retry", len(pending), exc)
            self._undelivered = pending

    def start(self) -> threading.Thread:
        """Tick every ``workers.reap_interval_s`` in a daemon thread until :meth:`stop`."""
        def loop() -> None:
            while not self._stop.wait(self.settings.workers.reap_interval_s):
                try:
                    self.tick()
                except Exception:  # never let the reaper die: it is what heals the run
                    log.exception("reaper tick failed")

        thread = threading.Thread(target=loop, name="reaper", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
