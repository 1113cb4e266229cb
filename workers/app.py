"""The Celery app: a Redis queue of "label user U of run R" messages; all state lives in SQL.

Why these settings (anchors.md §D):

* ``task_acks_late`` + ``worker_prefetch_multiplier=1``: a message is acknowledged only once the user's
  outcome is in SQL, and a worker reserves no more messages than it has free slots. A worker that dies
  leaves its messages unacknowledged, but its users do not wait for them: their claims' leases expire and
  the reaper of any live worker re-enqueues them within about a minute (``workers/reaper.py``). The
  **visibility timeout** (``workers.visibility_timeout_s``, set in ``broker_transport_options`` and
  ``visibility_timeout``, the same value everywhere) is only the backstop for a message a dead worker had
  received but not yet claimed; a copy redelivered while its user is still in progress finds a live lease
  and returns at once.
* ``task_reject_on_worker_lost``: a killed pool child puts its message back instead of acking it.
  The "message loop" risk the docs warn about is bounded: a user is claimed in SQL first, so a redelivered
  message for a finished user returns at once.
* ``task_ignore_result`` and no result backend: progress, errors and labels are rows in the store.
* Soft shutdown (``worker_soft_shutdown_timeout``): on SIGTERM in-flight users get that long to finish,
  then their messages are requeued at once rather than after the visibility timeout.
* Remote control stays on: Flower and ``celery inspect`` use it; ``--without-gossip/--without-mingle`` keep
  the chatter between many workers down (``coldlabel worker`` passes them).

Worker processes read their settings exactly like the CLI (``COLDLABEL_CONFIG`` + ``COLDLABEL_*`` env vars),
so ``python -m celery -A workers.app worker`` and ``coldlabel worker`` behave the same.
"""
from __future__ import annotations

from celery import Celery

from coldlabel.config import Settings, load_settings

QUEUE = "coldlabel"

app = Celery("coldlabel", include=["workers.tasks"])
_settings: Settings | None = None


def configure(settings: Settings) -> Celery:
    """Point the app at ``settings`` (broker, timeouts, retries); call before the first message."""
    global _settings
    _settings = settings
    w = settings.workers
    # Abandoned (unacked) messages are swept back into the queue every ``unacked_restore_interval`` s;
    # kombu's default sweep is ~100 s, too slow when the timeout itself is short.
    transport = {"visibility_timeout": w.visibility_timeout_s,
                 "unacked_restore_interval": max(1, min(60, w.visibility_timeout_s // 4)),
                 "unacked_restore_throttle": 1}
    app.conf.update(
        broker_url=w.broker_url or "memory://",
        broker_transport_options=transport,
        result_backend_transport_options=transport,  # unused (no backend), kept equal as the docs ask
        visibility_timeout=w.visibility_timeout_s,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,  # a dead-lettered user is recorded in SQL; don't loop on it
        worker_prefetch_multiplier=1,
        worker_soft_shutdown_timeout=w.soft_shutdown_timeout_s,
        worker_enable_soft_shutdown_on_idle=w.soft_shutdown_timeout_s > 0,
        worker_enable_remote_control=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,  # a user's SQL work survives a broker blip
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
    )
    return app


def settings() -> Settings:
    """The settings this process runs with (the environment's unless :func:`configure` was called)."""
    if _settings is None:
        configure(load_settings())
    return _settings  # type: ignore[return-value]


settings()
