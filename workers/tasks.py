"""The Celery task: "label user U of run R". A thin wrapper around :func:`labeler.lifecycle.process_user`.

The message carries only ``(run_id, user_idx)``; all state is in SQL, so a lost or duplicated message costs
at most a lookup. Retries are raised explicitly (``self.retry``) rather than through ``autoretry_for`` so that
``coldlabel worker --set workers.max_task_retries=...`` applies: Celery freezes ``autoretry_for`` options
when the module is imported.

A message is acknowledged only once its outcome is in SQL. When the store stays unreachable longer than
``workers.store_outage_s`` nothing could be recorded, so the message is rejected back onto the queue
(``Reject(requeue=True)``) instead: an outage never consumes a user's retries and never drops a user.

Each worker also runs the reaper (``workers/reaper.py``) once it is ready: expired claims of dead workers
are re-enqueued within about a minute.
"""
from __future__ import annotations

from collections import defaultdict

from celery import signals
from celery.exceptions import Reject

from coldlabel.config import Settings
from coldlabel.errors import ConfigError, Unavailable
from labeler.lifecycle import AttemptFailed, get_store, process_user, retry_countdown, worker_name
from workers.app import app, configure
from workers.app import settings as app_settings
from workers.limits import limiter_for
from workers.reaper import Reaper

TASK_NAME = "coldlabel.label_user"


def task_id(run_id: str, user_idx: int) -> str:
    """Deterministic: enqueuing the same user twice gives the same id (and the claim makes it harmless)."""
    return f"label:{run_id}:{user_idx}"


def _slot_for(settings: Settings, endpoint: str):
    return limiter_for(settings, endpoint).slot


@app.task(bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def label_user_task(self, run_id: str, user_idx: int, takeover: bool = False) -> str:
    """``takeover`` is accepted for messages queued by older versions and ignored: leases decide now."""
    settings = app_settings()
    max_retries = settings.workers.max_task_retries
    countdown = retry_countdown(settings, self.request.retries)
    try:
        return process_user(settings, run_id, user_idx, worker=worker_name(self.request.hostname),
                            final_attempt=self.request.retries >= max_retries, slot_for=_slot_for,
                            retry_in_s=countdown).status
    except Unavailable as exc:  # the outcome could not be recorded: the message goes back, unacknowledged
        raise Reject(f"run {run_id} user {user_idx}: {exc}", requeue=True) from exc
    except AttemptFailed as failure:
        if failure.dead:
            raise  # recorded as dead: acknowledged
        # A retry is a fresh message; 'failed' users are claimable (and reaped if the retry is lost).
        raise self.retry(exc=failure.cause, countdown=countdown, max_retries=max_retries)


def _send(run_id: str, users: list[int]) -> None:
    with app.producer_or_acquire() as producer:
        for user_idx in users:
            label_user_task.apply_async((run_id, user_idx), task_id=task_id(run_id, user_idx), producer=producer)


def enqueue(settings: Settings, run_id: str, users: list[int]) -> int:
    """One Celery message per user, sent over one producer connection."""
    if not settings.workers.broker_url:
        raise ConfigError("workers.broker_url is empty: there is no queue; use --inline or set the broker URL")
    configure(settings)
    _send(run_id, users)
    return len(users)


def send_reaped(reaped: list[tuple[str, int]]) -> None:
    """The reaper's dispatch: the reaped users back onto the queue, per run."""
    by_run: dict[str, list[int]] = defaultdict(list)
    for run_id, user_idx in reaped:
        by_run[run_id].append(user_idx)
    for run_id, users in by_run.items():
        _send(run_id, users)


_REAPER: list[Reaper] = []


@signals.worker_ready.connect
def _start_reaper(**_) -> None:
    """Every worker reaps expired claims of every active run (each user is reaped by one worker only)."""
    settings = app_settings()
    reaper = Reaper(lambda: get_store(settings), settings, dispatch=send_reaped)
    reaper.start()
    _REAPER.append(reaper)


@signals.worker_shutdown.connect
def _stop_reaper(**_) -> None:
    while _REAPER:
        _REAPER.pop().stop()
