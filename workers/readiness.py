"""Can this worker work? The store, the broker and the endpoint, checked before it reports ready.

A worker that started without its database used to report ready and drop every message it took. Now
``coldlabel worker`` waits up to ``workers.startup_timeout_s`` for all three and otherwise exits non-zero
with one line that says which one is missing and why. A problem waiting cannot fix (a schema behind the
code, an API key the endpoint refuses) fails at once.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx
import kombu
from kombu.utils.url import maybe_sanitize_url

from coldlabel.config import Settings
from coldlabel.errors import StoreError, StoreUnavailable, WorkerNotReady
from coldlabel.store import Store, redact
from labeler.builtin import DIALECT as BUILTIN_DIALECT

log = logging.getLogger("coldlabel.readiness")


@dataclass(frozen=True)
class Problem:
    what: str        # "store", "broker" or "endpoint"
    reason: str
    permanent: bool  # waiting cannot fix it


def store_problem(settings: Settings) -> Problem | None:
    url = settings.store_url()
    try:
        with Store(url, auto_upgrade=False) as store:  # never migrate from a worker
            store.ping()
    except StoreUnavailable as exc:
        return Problem("store", str(exc), permanent=False)
    except StoreError as exc:
        return Problem("store", f"{redact(url)}: {exc}", permanent=True)
    return None


def broker_problem(settings: Settings) -> Problem | None:
    url = settings.workers.broker_url
    try:
        with kombu.Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=5)
    except Exception as exc:  # kombu raises its own and the transport's errors
        return Problem("broker", f"{maybe_sanitize_url(url)} unreachable: {type(exc).__name__}: {exc}", permanent=False)
    return None


def endpoint_problem(settings: Settings) -> Problem | None:
    """The default endpoint (``labeler.endpoint``) answers HTTP and accepts the key; a builtin labeler
    (``dialect = "builtin"``, no server) always can."""
    name = settings.labeler.endpoint
    ep = settings.endpoint(name)
    if ep.dialect == BUILTIN_DIALECT:
        return None
    where = f"endpoint {name!r} at {ep.base_url}"
    try:
        resp = httpx.get(ep.base_url.rstrip("/") + "/models", timeout=5,
                         headers={"Authorization": f"Bearer {ep.api_key()}"})
    except httpx.HTTPError as exc:
        return Problem("endpoint", f"{where} unreachable: {type(exc).__name__}: {exc}", permanent=False)
    if resp.status_code in (401, 403):
        return Problem("endpoint", f"{where} rejected the API key (HTTP {resp.status_code}); check "
                                   f"${ep.api_key_env or '<endpoints.' + name + '.api_key_env not set>'}",
                       permanent=True)
    if resp.status_code >= 500:
        return Problem("endpoint", f"{where} answered HTTP {resp.status_code}", permanent=False)
    return None


def wait_until_ready(settings: Settings, timeout_s: float | None = None) -> None:
    """Return once store, broker and endpoint all answer; raise :class:`WorkerNotReady` (one line) when one
    still does not after ``timeout_s`` (default ``workers.startup_timeout_s``), or cannot by waiting."""
    timeout_s = settings.workers.startup_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    checks = [store_problem, broker_problem, endpoint_problem]
    while True:
        problems = [p for p in (check(settings) for check in checks) if p is not None]
        if not problems:
            return
        first = problems[0]
        if first.permanent or time.monotonic() >= deadline:
            waited = "" if first.permanent else f" (waited {timeout_s:g}s, workers.startup_timeout_s)"
            raise WorkerNotReady(f"worker not started: {first.what}: {first.reason}{waited}")
        log.warning("waiting for the %s: %s", first.what, first.reason)
        checks = [c for c in checks if any(p.what == c.__name__.split("_")[0] for p in problems)]
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
