"""One user's life inside a run: claim → label → finish (or fail). The one path every runner takes.

Celery tasks (``workers/tasks.py``), the inline thread pool (``workers/inline.py``), ``coldlabel label user``
and ``coldlabel demo`` all call :func:`process_user`; none of them writes run state by hand.

Idempotency, in order:

1. ``claim_user`` in SQL, with a lease (``workers.lease_s``) that this process renews while it works
   (``labeler/leases.py``). A done or dead user, an inactive run, or a user another worker holds a live
   lease on → return at once, no LLM call. A claim whose worker died expires and is reaped (re-enqueued).
2. The run's dataset must still be the one it started on (``labeler.runs.check_dataset``).
3. ``label_user`` resumes from the stages already stored for the user.
4. The user's edges and triplets are replaced in one transaction, then the user is marked done; when no user
   is left, the run's end is decided (``labeler.runs.settle_run``).

What goes wrong decides what happens:

* the store or the limiter's Redis is away (:class:`Unavailable`): nothing is recorded, no retry is spent;
  the user waits for it (up to ``workers.store_outage_s``) holding its claim, then carries on. Past that,
  ``Unavailable`` is raised and the runner gives the message back instead of acknowledging it.
* the endpoint refuses the configuration (:class:`EndpointRejected`: key, model, route, request shape), the
  dataset changed, or the workspace is broken: the **run is paused** with that message; the user stays
  claimable for ``label resume``.
* the endpoint could not answer after the client's retries (:class:`EndpointError`): the attempt failed
  (:class:`AttemptFailed`, the runner retries it); the circuit breaker pauses the run after
  ``transport.circuit_breaker_failures`` users in a row failed this way, instead of burning every user.
* the one request is refused (:class:`RequestRejected`), the last attempt failed, or anything else (a bug,
  bad data): the user is dead-lettered ('dead', error kept).

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
import time
from dataclasses import dataclass
from typing import Any, AsyncContextManager, Callable, TypeVar

from coldlabel.config import Settings
from coldlabel.errors import (
    DatasetChanged,
    EndpointError,
    EndpointRejected,
    RequestRejected,
    Unavailable,
    WorkspaceError,
)
from coldlabel.store import Run, Store
from labeler import pipeline
from labeler.leases import lease_keeper
from labeler.pipeline import LabelContext, UserOutcome
from labeler.runs import check_dataset, run_max_fallback_share, settle_run

log = logging.getLogger("coldlabel.lifecycle")

# Worth another attempt of the user: the endpoint was briefly away, the user's data is fine.
TRANSIENT: tuple[type[BaseException], ...] = (EndpointError, ConnectionError, TimeoutError)
# Not the user's problem but the run's: pause it with the message instead of failing every user.
RUN_LEVEL: tuple[type[BaseException], ...] = (EndpointRejected, DatasetChanged, WorkspaceError)

T = TypeVar("T")

# A runner's endpoint-concurrency hook: (settings, endpoint name) -> an ``async with`` slot factory.
SlotFor = Callable[[Settings, str], Callable[[], AsyncContextManager[Any]]]


@dataclass
class UserResult:
    status: str  # "done", "skipped" (nothing to do: done, dead, run not active, claimed elsewhere), "paused"
    outcome: UserOutcome | None = None


class AttemptFailed(Exception):
    """One attempt of a user failed and was recorded in SQL: ``dead`` (dead-lettered; do not retry) or
    'failed' (the runner may retry). ``cause`` is what went wrong."""

    def __init__(self, cause: BaseException, dead: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause
        self.dead = dead


def retry_countdown(settings: Settings, retries: int) -> float:
    """Exponential backoff with jitter, kept well under the visibility timeout (a delayed message sits
    unacknowledged in a worker; past the timeout Redis would hand it out a second time)."""
    w = settings.workers
    ceiling = min(w.retry_backoff_s * 2 ** retries, 600.0, w.visibility_timeout_s / 2)
    return random.uniform(ceiling / 2, ceiling) if ceiling > 0 else 0.0


def worker_name(hostname: str | None = None) -> str:
    """Who holds a claim: ``role@host:pid:thread``, unique across machines (a claim's owner may re-enter it)."""
    name = hostname or socket.gethostname()
    if "@" not in name:
        name = f"{name}@{socket.gethostname()}"
    return f"{name}:{os.getpid()}:{threading.current_thread().name}"


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

def patiently(settings: Settings, action: Callable[[], T], what: str) -> T:
    """``action()``, waiting out :class:`Unavailable` infrastructure (backoff up to 10 s) for at most
    ``workers.store_outage_s``; past that the error is raised."""
    deadline = time.monotonic() + settings.workers.store_outage_s
    delay = 0.5
    while True:
        try:
            return action()
        except Unavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("%s: %s; waiting for it (gives up in %.0fs)", what, exc, left)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)


def process_user(settings: Settings, run_id: str, user_idx: int, *, worker: str, final_attempt: bool,
                 takeover: bool = False, slot_for: SlotFor | None = None,
                 retry_in_s: float | None = None) -> UserResult:
    """Label one user of a run and record the outcome. A failed attempt is recorded ('failed', or 'dead'
    when ``final_attempt`` or not worth retrying) and raised as :class:`AttemptFailed`; ``retry_in_s`` is
    when the runner means to retry it (the reaper re-sends it if that retry never comes). A run-level
    problem pauses the run and returns ``"paused"``. Raises :class:`Unavailable` only when the store stayed
    away longer than ``workers.store_outage_s``: nothing was recorded, the message must go back."""
    store = get_store(settings)
    keeper = lease_keeper(store, settings.workers.lease_s)
    claim = (run_id, user_idx, worker)
    try:
        return patiently(settings, lambda: _attempt(settings, store, claim, final_attempt=final_attempt,
                                                    takeover=takeover, slot_for=slot_for, retry_in_s=retry_in_s),
                         f"run {run_id} user {user_idx}")
    finally:
        keeper.release(claim)


def _attempt(settings: Settings, store: Store, claim: tuple[str, int, str], *, final_attempt: bool,
             takeover: bool, slot_for: SlotFor | None, retry_in_s: float | None) -> UserResult:
    run_id, user_idx, worker = claim
    if not store.claim_user(run_id, user_idx, worker, lease_s=settings.workers.lease_s, takeover=takeover):
        return UserResult("skipped")
    lease_keeper(store, settings.workers.lease_s).hold(claim)
    run: Run | None = None
    try:
        run = store.get_run(run_id)
        check_dataset(settings, run)
        ctx = label_context(settings, run, slot_for)
        outcome = _thread_loop().run_until_complete(pipeline.label_user(ctx, run_id, user_idx))
        # label_user saved the labels (one transaction); a crash before the next line only repeats work.
        store.finish_user(run_id, user_idx, outcome.counters)
    except Unavailable:
        raise  # nothing to record: the claim is kept (its lease renewed) while process_user waits
    except BaseException as exc:
        return _record_failure(settings, store, run, claim, exc, final_attempt=final_attempt, retry_in_s=retry_in_s)
    _settle(settings, store, run)
    return UserResult("done", outcome)


def _record_failure(settings: Settings, store: Store, run: Run | None, claim: tuple[str, int, str],
                    exc: BaseException, *, final_attempt: bool, retry_in_s: float | None) -> UserResult:
    """Write down how the attempt failed and what happens next; returns ``paused`` or raises."""
    run_id, user_idx, _ = claim
    error = f"{type(exc).__name__}: {exc}"
    where = f"run {run_id} user {user_idx}"

    def fail(dead: bool, retry: bool = False) -> None:
        within = retry_in_s + settings.workers.lease_s if retry and retry_in_s is not None else None
        patiently(settings, lambda: store.fail_user(run_id, user_idx, error, dead=dead, retry_within_s=within),
                  where)

    if not isinstance(exc, Exception):  # KeyboardInterrupt/SystemExit: a shutdown, not the user's fault
        fail(dead=False)
        raise exc
    if isinstance(exc, RUN_LEVEL):
        fail(dead=False)
        reason = f"{exc}. Then: `coldlabel label resume {run_id}`"
        if patiently(settings, lambda: store.end_run(run_id, "paused", reason), where):
            log.error("run %s paused: %s", run_id, reason)
        return UserResult("paused")
    if isinstance(exc, TRANSIENT) and not isinstance(exc, RequestRejected):
        if isinstance(exc, EndpointError) and _breaker_tripped(settings, store, run_id, exc):
            fail(dead=False)
            return UserResult("paused")
        dead = final_attempt
    else:  # a refused request, a bug or bad data: retrying would fail the same way
        dead = True
    fail(dead=dead, retry=not dead)
    log.warning("%s: %s (%s)", where, error, "dead-lettered" if dead else "will retry")
    if dead and run is not None:
        _settle(settings, store, run)
    raise AttemptFailed(exc, dead) from exc


def _breaker_tripped(settings: Settings, store: Store, run_id: str, exc: BaseException) -> bool:
    """Count a user lost to transport errors; True when the run is (now) paused, by this or an earlier trip."""
    n = settings.transport.circuit_breaker_failures
    reason = (f"paused by the circuit breaker: {n} users in a row failed on transport errors (last: {exc}). "
              f"When the endpoint answers again: `coldlabel label resume {run_id}` (or --endpoint another one)")

    if patiently(settings, lambda: store.note_transport_failure(run_id, n, reason), f"run {run_id}"):
        log.error("run %s: %s", run_id, reason)  # said once, by the attempt that tripped it
        return True
    return patiently(settings, lambda: store.get_run(run_id).status == "paused", f"run {run_id}")


def _settle(settings: Settings, store: Store, run: Run) -> None:
    """Decide how the run ended when this user was its last one."""
    if patiently(settings, lambda: store.has_users_left(run.id), f"run {run.id}"):
        return
    ended = patiently(settings, lambda: settle_run(store, run.id, run_max_fallback_share(run)), f"run {run.id}")
    if ended and ended != "done":
        log.warning("run %s ended %s: %s", run.id, ended, store.get_run(run.id).status_reason)


def replay_user(settings: Settings, run_id: str, user_idx: int) -> UserOutcome:
    """A finished user's outcome rebuilt from its stored stages (no LLM call; the run state is untouched)."""
    store = get_store(settings)
    ctx = label_context(settings, store.get_run(run_id))
    return _thread_loop().run_until_complete(pipeline.label_user(ctx, run_id, user_idx))
