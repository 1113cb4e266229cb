"""The Celery task: "label user U of run R". A thin wrapper around :func:`labeler.lifecycle.process_user`.

The message carries only ``(run_id, user_idx)``; all state is in SQL, so a lost or duplicated message costs
at most a lookup. Retries are raised explicitly (``self.retry``) rather than through ``autoretry_for`` so that
``coldlabel worker --set workers.max_task_retries=...`` applies: Celery freezes ``autoretry_for`` options
when the module is imported. A redelivered message (its worker died) takes the user over at once.
"""
from __future__ import annotations

from coldlabel.config import Settings
from coldlabel.errors import ConfigError
from labeler.lifecycle import TRANSIENT, process_user, retry_countdown, worker_name
from workers.app import app, configure
from workers.app import settings as app_settings
from workers.limits import limiter_for

TASK_NAME = "coldlabel.label_user"


def task_id(run_id: str, user_idx: int) -> str:
    """Deterministic: enqueuing the same user twice gives the same id (and the claim makes it harmless)."""
    return f"label:{run_id}:{user_idx}"


def _slot_for(settings: Settings, endpoint: str):
    return limiter_for(settings, endpoint).slot


@app.task(bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def label_user_task(self, run_id: str, user_idx: int, takeover: bool = False) -> str:
    settings = app_settings()
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    max_retries = settings.workers.max_task_retries
    try:
        return process_user(settings, run_id, user_idx, worker=worker_name(self.request.hostname),
                            takeover=takeover or redelivered, final_attempt=self.request.retries >= max_retries,
                            slot_for=_slot_for).status
    except TRANSIENT as exc:
        if self.request.retries >= max_retries:
            raise
        # A retry is a fresh message; 'failed' users are claimable, so it needs no takeover.
        raise self.retry(exc=exc, countdown=retry_countdown(settings, self.request.retries),
                         max_retries=max_retries, kwargs={"takeover": False})


def enqueue(settings: Settings, run_id: str, users: list[int], takeover: list[int] = ()) -> int:
    """One Celery message per user, sent over one producer connection."""
    if not settings.workers.broker_url:
        raise ConfigError("workers.broker_url is empty: there is no queue; use --inline or set the broker URL")
    configure(settings)
    takeover = set(takeover)
    with app.producer_or_acquire() as producer:
        for user_idx in users:
            label_user_task.apply_async((run_id, user_idx), {"takeover": user_idx in takeover},
                                        task_id=task_id(run_id, user_idx), producer=producer)
    return len(users)
