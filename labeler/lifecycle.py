"""One user's life inside a run: claim → label → finish (or fail). The one path every runner takes.

Celery tasks (``workers/tasks.py``), the inline thread pool (``workers/inline.py``), ``coldlabel label user``
and ``coldlabel demo`` all call :func:`process_user`; none of them writes run state by hand.

Idempotency, in order:

1. ``claim_user`` in SQL. A done or dead user, a cancelled run, or a user another worker is running
   (claimed less than ``stale_after_s`` ago) → return at once, no LLM call. A *redelivered* message (its
   worker died) or a resume of a user left 'running' (``takeover``) claims at once: the previous owner is
   presumed gone, and a duplicate would only cost time because every write below is an upsert/replace.
2. ``label_user`` resumes from the stages already stored for the user.
3. The user's edges and triplets are replaced in one transaction, then the user is marked done.

Failures: :data:`TRANSIENT` ones (the endpoint unreachable after the client's own retries, the shared limiter
or the database briefly away) mark the user 'failed' and are re-raised for the runner to retry; the last
attempt, and any other error (a bug, bad data), dead-letters the user ('dead', error kept).

Each thread keeps its own asyncio loop and its own LLM client (an async HTTP client belongs to one loop);
the candidate space (the heavy part) is loaded once per process and shared.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
from dataclasses import dataclass
from typing import Any, AsyncContextManager, Callable

import sqlalchemy.exc

from coldlabel.config import Settings
from coldlabel.errors import EndpointError, LimiterUnavailable, StoreUnavailable
from coldlabel.store import Run, Store
from labeler import pipeline
from labeler.pipeline import LabelContext, UserOutcome

log = logging.getLogger("coldlabel.lifecycle")

# Worth another attempt: the outside world was briefly away, the user's data is fine.
TRANSIENT: tuple[type[BaseException], ...] = (EndpointError, LimiterUnavailable, StoreUnavailable,
                                              sqlalchemy.exc.OperationalError, ConnectionError, TimeoutError)

# A runner's endpoint-concurrency hook: (settings, endpoint name) -> an ``async with`` slot factory.
SlotFor = Callable[[Settings, str], Callable[[], AsyncContextManager[Any]]]


@dataclass
class UserResult:
    status: str                      # "done" or "skipped" (nothing to do: done, dead, cancelled, owned)
    outcome: UserOutcome | None = None


def retry_countdown(settings: Settings, retries: int) -> float:
    """Exponential backoff with jitter, kept well under the visibility timeout (a delayed message sits
    unacknowledged in a worker; past the timeout Redis would hand it out a second time)."""
    w = settings.workers
    ceiling = min(w.retry_backoff_s * 2 ** retries, 600.0, w.visibility_timeout_s / 2)
    return random.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0


def worker_name(hostname: str | None = None) -> str:
    return f"{hostname or socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"


# ---- per-process store, per-thread loop and context -------------------------------------------------

_STORES: dict[str, Store] = {}
_STORE_LOCK = threading.Lock()
_CONTEXT_LOCK = threading.Lock()
_tls = threading.local()


def get_store(settings: Settings) -> Store:
    """One store (engine and pool) per database URL per process."""
    url = settings.store_url()
    with _STORE_LOCK:
        if url not in _STORES:
            _STORES[url] = Store(url)
        return _STORES[url]


def run_settings(base: Settings, run: Run) -> Settings:
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


def label_context(settings: Settings, run: Run, slot_for: SlotFor | None = None) -> LabelContext:
    """This thread's LabelContext for ``run``: its own client (with the runner's endpoint slot hook)."""
    eff = run_settings(settings, run)
    key = (run.dataset, run.endpoint,
           eff.fingerprint("data", "retrieval", "labeler", "endpoints", "transport", "store"), slot_for)
    contexts = getattr(_tls, "contexts", None)
    if contexts is None:
        contexts = _tls.contexts = {}
    if key not in contexts:
        with _CONTEXT_LOCK:  # the first thread loads the space; the others wait instead of loading it again
            slot = slot_for(eff, run.endpoint) if slot_for is not None else None
            contexts[key] = pipeline.open_context(eff, run.dataset, run.endpoint, store=get_store(settings),
                                                  slot=slot)
    return contexts[key]


# ---- the one path -----------------------------------------------------------------------------------

def _finish_run_if_complete(store: Store, run_id: str) -> None:
    if not store.incomplete_users(run_id, include_dead=True) and store.get_run(run_id).status == "active":
        store.set_run_status(run_id, "done")


def process_user(settings: Settings, run_id: str, user_idx: int, *, worker: str, takeover: bool,
                 final_attempt: bool, slot_for: SlotFor | None = None) -> UserResult:
    """Label one user of a run. On failure record it in SQL ('failed', or 'dead' when ``final_attempt``
    or not transient) and re-raise, so the runner decides about retrying."""
    store = get_store(settings)
    stale = 0.0 if takeover else float(settings.workers.visibility_timeout_s)
    if not store.claim_user(run_id, user_idx, worker, stale_after_s=stale):
        return UserResult("skipped")
    try:
        run = store.get_run(run_id)
        ctx = label_context(settings, run, slot_for)
        outcome = _thread_loop().run_until_complete(pipeline.label_user(ctx, run_id, user_idx))
        # label_user saved the labels (one transaction); a crash before the next line only repeats work.
        store.finish_user(run_id, user_idx, outcome.counters)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # KeyboardInterrupt/SystemExit: a shutdown, not the user's fault
            dead = False
        elif isinstance(exc, TRANSIENT):
            dead = final_attempt
        else:  # a bug or bad data: retrying would fail the same way
            dead = True
        error = f"{type(exc).__name__}: {exc}"
        try:
            store.fail_user(run_id, user_idx, error, dead=dead)
        except Exception as store_exc:  # the store may be what failed; the claim goes stale and is retaken
            log.warning("run %s user %s: could not record the failure (%s)", run_id, user_idx, store_exc)
        log.warning("run %s user %s: %s (%s)", run_id, user_idx, error, "dead-lettered" if dead else "will retry")
        raise
    _finish_run_if_complete(store, run_id)
    return UserResult("done", outcome)


def replay_user(settings: Settings, run_id: str, user_idx: int) -> UserOutcome:
    """A finished user's outcome rebuilt from its stored stages (no LLM call; the run state is untouched)."""
    store = get_store(settings)
    ctx = label_context(settings, store.get_run(run_id))
    return _thread_loop().run_until_complete(pipeline.label_user(ctx, run_id, user_idx))
