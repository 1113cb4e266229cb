"""The one task: label user U of run R. Shared by Celery workers and the inline runner (:func:`process_user`).

Idempotency, in order:

1. ``claim_user`` in SQL. A done or dead user, a cancelled run, or a user another worker is running
   (claimed less than the visibility timeout ago) -> return at once, no LLM call. A *redelivered* message
   (its worker died; Redis gave it back) or a message sent by ``resume`` for a user left 'running'
   (``takeover``) claims at once: the previous owner is presumed gone, and a duplicate would only cost
   time because every write below is an upsert/replace.
2. ``label_user`` resumes from the stages already stored for the user.
3. The user's edges and triplets are replaced in one transaction, then the user is marked done.

Failures: transient ones (:data:`TRANSIENT`: the endpoint unreachable after the client's own retries, the
shared limiter or the database briefly away) mark the user 'failed' with the error and retry the task with
exponential backoff, at most ``workers.max_task_retries`` times; the last failure, and any other error
(a bug, bad data), dead-letters the user ('dead', error kept) and acks the message. ``label resume``
re-enqueues failed and dead users. Retries are raised explicitly (``self.retry``) rather than through
``autoretry_for`` so that ``coldlabel worker --set workers.max_task_retries=...`` applies: Celery freezes
``autoretry_for`` options when the module is imported.

Each worker thread keeps its own asyncio loop and its own LLM client (an async HTTP client belongs to one
loop); the heavy part of the context (the candidate space) is opened once per process and shared.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
from typing import Any

from coldlabel.config import Settings
from workers.app import app, settings as app_settings
from workers.limits import LimiterUnavailable, limiter_for

log = logging.getLogger("coldlabel.worker")

TASK_NAME = "coldlabel.label_user"


def _transient_errors() -> tuple[type[BaseException], ...]:
    import sqlalchemy.exc

    from labeler.client import EndpointError

    return (EndpointError, LimiterUnavailable, sqlalchemy.exc.OperationalError, ConnectionError, TimeoutError)


def task_id(run_id: str, user_idx: int) -> str:
    """Deterministic: enqueuing the same user twice gives the same id (and the claim makes it harmless)."""
    return f"label:{run_id}:{user_idx}"


def retry_countdown(settings: Settings, retries: int) -> float:
    """Exponential backoff with jitter, kept well under the visibility timeout (a delayed message sits
    unacknowledged in a worker; past the timeout Redis would hand it out a second time)."""
    w = settings.workers
    ceiling = min(w.retry_backoff_s * 2 ** retries, 600.0, w.visibility_timeout_s / 2)
    return random.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0


# ---- per-process store, per-process context, per-thread loop and client -----------------------------

_STORES: dict[str, Any] = {}
_STORE_LOCK = threading.Lock()
_CONTEXT_LOCK = threading.Lock()
_tls = threading.local()


def get_store(settings: Settings):
    from labeler.store import Store

    url = settings.store_url()
    with _STORE_LOCK:
        if url not in _STORES:
            _STORES[url] = Store(url)
        return _STORES[url]


def run_settings(base: Settings, run) -> Settings:
    """What a user of ``run`` is labeled with: the run's recorded labeler/retrieval settings (a run is one
    configuration), this host's endpoints, store and data root, and the run's current endpoint."""
    tree = base.model_dump()
    for section in ("labeler", "retrieval"):
        if isinstance(run.config.get(section), dict):
            tree[section] = run.config[section]
    tree["labeler"]["endpoint"] = run.endpoint
    return Settings.model_validate(tree)


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_tls, "loop", None)
    if loop is None or loop.is_closed():
        loop = _tls.loop = asyncio.new_event_loop()
    return loop


def label_context(settings: Settings, run):
    """This thread's LabelContext for ``run``: its own client (with the endpoint limiter as the slot hook);
    the candidate space is loaded once per process by the pipeline."""
    eff = run_settings(settings, run)
    from labeler import pipeline

    key = (run.dataset, run.endpoint,
           eff.fingerprint("data", "retrieval", "labeler", "endpoints", "transport", "store"))
    contexts = getattr(_tls, "contexts", None)
    if contexts is None:
        contexts = _tls.contexts = {}
    if key not in contexts:
        with _CONTEXT_LOCK:  # the first thread loads the space; the others wait for it instead of loading it again
            contexts[key] = pipeline.open_context(
                eff, run.dataset, run.endpoint, store=get_store(settings), slot=limiter_for(eff, run.endpoint).slot)
    return contexts[key]


# ---- the shared body ------------------------------------------------------------------------------

def _finish_run_if_complete(store, run_id: str) -> None:
    if not store.incomplete_users(run_id, include_dead=True) and store.get_run(run_id).status == "active":
        store.set_run_status(run_id, "done")


def process_user(settings: Settings, run_id: str, user_idx: int, *, worker: str, takeover: bool,
                 final_attempt: bool) -> str:
    """Label one user; returns 'done' or 'skipped'. On failure records it in SQL ('failed', or 'dead' when
    ``final_attempt`` or not transient) and re-raises."""
    store = get_store(settings)
    stale = 0.0 if takeover else float(settings.workers.visibility_timeout_s)
    if not store.claim_user(run_id, user_idx, worker, stale_after_s=stale):
        return "skipped"
    try:
        run = store.get_run(run_id)
        ctx = label_context(settings, run)
        from labeler.pipeline import label_user

        outcome = _thread_loop().run_until_complete(label_user(ctx, run_id, user_idx))
        # label_user saved the labels (one transaction); a crash before the next line only repeats work.
        store.finish_user(run_id, user_idx, outcome.counters)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # KeyboardInterrupt/SystemExit: a shutdown, not the user's fault
            dead = False
        elif isinstance(exc, _transient_errors()):
            dead = final_attempt
        else:  # a bug or bad data: retrying would fail the same way
            dead = True
        error = f"{type(exc).__name__}: {exc}"
        try:
            store.fail_user(run_id, user_idx, error, dead=dead)
        except Exception as store_exc:  # the store may be what failed; the claim goes stale and is retaken
            log.warning("run %s user %s: could not record the failure (%s)", run_id, user_idx, store_exc)
        log.warning("run %s user %s: %s (%s)", run_id, user_idx, error,
                    "dead-lettered" if dead else "will retry")
        raise
    _finish_run_if_complete(store, run_id)
    return "done"


def worker_name(hostname: str | None = None) -> str:
    return f"{hostname or socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


@app.task(bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def label_user_task(self, run_id: str, user_idx: int, takeover: bool = False) -> str:
    settings = app_settings()
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    max_retries = settings.workers.max_task_retries
    try:
        return process_user(settings, run_id, user_idx, worker=worker_name(self.request.hostname),
                            takeover=takeover or redelivered, final_attempt=self.request.retries >= max_retries)
    except _transient_errors() as exc:
        if self.request.retries >= max_retries:
            raise
        # A retry is a fresh message; 'failed' users are claimable, so it needs no takeover.
        raise self.retry(exc=exc, countdown=retry_countdown(settings, self.request.retries),
                         max_retries=max_retries, kwargs={"takeover": False})
