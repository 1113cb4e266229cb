"""Run a labeling job in this process, without a broker: the same user lifecycle
(:func:`labeler.lifecycle.process_user`) on a thread pool of ``workers.inline_concurrency``, with the same
retries, dead-lettering, leases and reaper as a Celery worker.

This is the embedded default (``workers.broker_url`` empty, SQLite store): one command, nothing to run
beside it. It returns when no user of the run is left to label here: users claimed by a process that died
(an earlier inline run killed with SIGKILL) come back through the reaper once their leases expire.
Interrupting it (Ctrl-C) leaves the unfinished users claimable; ``label resume`` continues.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from coldlabel.config import Settings
from labeler.lifecycle import AttemptFailed, get_store, process_user, retry_countdown, worker_name
from workers.limits import limiter_for
from workers.reaper import Reaper

log = logging.getLogger("coldlabel.inline")

POLL_S = 1.0  # how often the runner looks at its threads and the run while it waits


@dataclass
class InlineResult:
    """How each user's last attempt here ended (a user skipped, then reaped and labeled, counts as done)."""
    done: int = 0
    skipped: int = 0
    dead: int = 0
    paused: int = 0
    seconds: float = 0.0
    errors: dict[int, str] = field(default_factory=dict)


def _slot_for(settings: Settings, endpoint: str):
    return limiter_for(settings, endpoint).slot


def _one_user(settings: Settings, run_id: str, user_idx: int) -> tuple[str, str]:
    retries = settings.workers.max_task_retries
    for attempt in range(retries + 1):
        countdown = retry_countdown(settings, attempt)
        try:
            return process_user(settings, run_id, user_idx, worker=worker_name("inline"),
                                final_attempt=attempt >= retries, slot_for=_slot_for, retry_in_s=countdown).status, ""
        except AttemptFailed as failure:
            if failure.dead:
                return "dead", str(failure)
            time.sleep(countdown)
    raise AssertionError("unreachable")


def run_inline(settings: Settings, run_id: str, users: list[int],
               on_user: Callable[[int, str], None] | None = None) -> InlineResult:
    """Label ``users`` of ``run_id`` here; ``on_user(user_idx, outcome)`` is called as each attempt ends.
    Raises :class:`coldlabel.errors.Unavailable` when the store stayed away past ``workers.store_outage_s``."""
    started = time.perf_counter()
    store = get_store(settings)
    reaper = Reaper(lambda: store, settings, run_id=run_id)
    outcomes: dict[int, tuple[str, str]] = {}
    futures: dict[Future, int] = {}
    pool = ThreadPoolExecutor(max_workers=settings.workers.inline_concurrency, thread_name_prefix="label")

    def submit(user_idx: int) -> None:
        futures[pool.submit(_one_user, settings, run_id, user_idx)] = user_idx

    try:
        for user_idx in users:
            submit(user_idx)
        next_reap = time.monotonic() + settings.workers.reap_interval_s
        while True:
            finished = wait(list(futures), timeout=POLL_S, return_when=FIRST_COMPLETED)[0] if futures else set()
            for fut in finished:
                user_idx = futures.pop(fut)
                outcomes[user_idx] = fut.result()  # Unavailable (the store stayed away) ends the run here
                if on_user:
                    on_user(user_idx, outcomes[user_idx][0])
            if time.monotonic() >= next_reap:
                next_reap = time.monotonic() + settings.workers.reap_interval_s
                queued = set(futures.values())
                for _, user_idx in reaper.tick():
                    if user_idx not in queued:
                        submit(user_idx)
            if not futures:
                if not _others_working(store, run_id):
                    break
                time.sleep(POLL_S)  # claims of another process: wait until they finish or are reaped
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    result = InlineResult(seconds=time.perf_counter() - started)
    for user_idx, (outcome, error) in outcomes.items():
        setattr(result, outcome, getattr(result, outcome) + 1)
        if error:
            result.errors[user_idx] = error
    return result


def _others_working(store, run_id: str) -> bool:
    """Is the (still active) run waiting on claims held elsewhere, live or expired but not reaped yet?"""
    if store.get_run(run_id).status != "active":
        return False
    progress = store.run_progress(run_id)
    return progress.by_status["running"] + progress.stalled > 0
