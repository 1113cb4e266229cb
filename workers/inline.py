"""Run a labeling job in this process, without a broker: the same user lifecycle
(:func:`labeler.lifecycle.process_user`) on a thread pool of ``workers.inline_concurrency``, with the same
retries and dead-lettering as a Celery worker.

This is the embedded default (``workers.broker_url`` empty, SQLite store): one command, nothing to run
beside it. Interrupting it (Ctrl-C) leaves the unfinished users claimable; ``label resume`` continues.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

from coldlabel.config import Settings
from labeler.lifecycle import TRANSIENT, process_user, retry_countdown, worker_name
from workers.limits import limiter_for

log = logging.getLogger("coldlabel.inline")


@dataclass
class InlineResult:
    done: int = 0
    skipped: int = 0
    dead: int = 0
    seconds: float = 0.0
    errors: dict[int, str] = field(default_factory=dict)


def _slot_for(settings: Settings, endpoint: str):
    return limiter_for(settings, endpoint).slot


def _one_user(settings: Settings, run_id: str, user_idx: int) -> tuple[str, str]:
    retries = settings.workers.max_task_retries
    for attempt in range(retries + 1):
        try:
            # Inline, nobody else owns this run's users: a user left 'running' by a crash is taken over.
            return process_user(settings, run_id, user_idx, worker=worker_name("inline"), takeover=True,
                                final_attempt=attempt >= retries, slot_for=_slot_for).status, ""
        except TRANSIENT as exc:
            if attempt >= retries:
                return "dead", f"{type(exc).__name__}: {exc}"
            time.sleep(retry_countdown(settings, attempt))
        except Exception as exc:  # dead-lettered by process_user
            return "dead", f"{type(exc).__name__}: {exc}"
    raise AssertionError("unreachable")


def run_inline(settings: Settings, run_id: str, users: list[int],
               on_user: Callable[[int, str], None] | None = None) -> InlineResult:
    """Label ``users`` of ``run_id`` here; ``on_user(user_idx, outcome)`` is called as each one ends."""
    result = InlineResult()
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=settings.workers.inline_concurrency, thread_name_prefix="label")
    try:
        futures = {pool.submit(_one_user, settings, run_id, u): u for u in users}
        for fut in as_completed(futures):
            user_idx = futures[fut]
            outcome, error = fut.result()
            setattr(result, outcome, getattr(result, outcome) + 1)
            if error:
                result.errors[user_idx] = error
            if on_user:
                on_user(user_idx, outcome)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    result.seconds = time.perf_counter() - started
    return result
