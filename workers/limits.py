"""Per-endpoint concurrency limits that hold across threads, event loops and worker processes.

``endpoints.<name>.concurrency`` is a promise to the LLM server ("at most C requests at once"). Inside one
process the labeler runs one asyncio loop per thread, so a plain ``asyncio.Semaphore`` (bound to one loop)
cannot keep it; across Celery workers nothing in-process can. Two limiters, same interface
(``async with limiter.slot(): ...``, the hook :class:`labeler.client.LLMClient` enters around every HTTP
attempt):

* :class:`LocalLimiter` -- no broker (inline runs): a counting semaphore shared by every thread and loop of
  the process; a released slot is handed straight to the oldest waiter.
* :class:`RedisLimiter` -- a broker exists: a counting semaphore in Redis (one sorted set per endpoint,
  member = slot token, score = lease expiry by Redis' own clock). A holder renews its lease every
  ``lease/3`` seconds; a worker that dies (SIGKILL, OOM) stops renewing and its slots free themselves after
  ``workers.slot_lease_s``. Waiters poll with a short backoff and are woken at once when a slot is released
  in their own process.

:func:`limiter_for` gives one limiter per endpoint per process.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Protocol

import redis

from coldlabel.config import Settings
from coldlabel.errors import LimiterUnavailable

log = logging.getLogger("coldlabel.limits")

POLL_MIN_S = 0.002  # first re-check of Redis after a failed acquire
POLL_MAX_S = 0.05   # the backoff ceiling; a release in this process wakes waiters sooner


class Limiter(Protocol):
    def slot(self) -> "asynccontextmanager[None]": ...


class _Waiters:
    """Futures of waiters from any thread/loop; ``wake_one`` resolves the oldest one thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()

    def add(self) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            self._queue.append((loop, fut))
        return fut

    def discard(self, fut: asyncio.Future) -> bool:
        """Remove a waiter that gave up; False if it was already woken."""
        with self._lock:
            for i, (_, f) in enumerate(self._queue):
                if f is fut:
                    del self._queue[i]
                    return True
        return False

    def pop(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Future] | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None


class LocalLimiter:
    """At most ``limit`` slots held at once by all threads of this process (FIFO hand-over)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()
        self._waiters = _Waiters()

    async def acquire(self) -> None:
        with self._lock:
            if self.held < self.limit:
                self.held += 1
                return
            fut = self._waiters.add()
        try:
            await fut  # resolved by release(), which hands its slot over (held stays the same)
        except asyncio.CancelledError:
            if not self._waiters.discard(fut):
                # The slot was handed to us while we were being cancelled: give it back. If the hand-over
                # callback has not run yet, it sees the cancelled future and releases for us (_grant).
                if fut.done() and not fut.cancelled():
                    self.release()
            raise

    def release(self) -> None:
        with self._lock:
            nxt = self._waiters.pop()
            if nxt is None:
                self.held -= 1
                return
        loop, fut = nxt
        try:
            loop.call_soon_threadsafe(self._grant, fut)
        except RuntimeError:  # that waiter's loop is closed: pass the slot on
            self.release()

    def _grant(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            self.release()
        else:
            fut.set_result(None)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()


# Redis scripts: time comes from the Redis server so that worker clocks need not agree.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
  return 1
end
return 0
"""
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
  return 1
end
return 0
"""
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RedisLimiter:
    """At most ``limit`` slots held at once across every process that uses the same Redis ``key``."""

    def __init__(self, client, key: str, limit: int, lease_s: float = 30.0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.client = client  # a sync redis.Redis: thread-safe pool, ~0.1 ms per call on a local server
        self.key = key
        self.limit = limit
        self.lease_s = lease_s
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._count = client.register_script(_COUNT)
        self._local = _Waiters()

    def _call(self, script, args: list) -> int:
        try:
            return int(script(keys=[self.key], args=args))
        except redis.RedisError as exc:
            raise LimiterUnavailable(f"endpoint limiter {self.key!r}: Redis unreachable ({exc})") from exc

    def held(self) -> int:
        """Slots held right now (expired leases dropped)."""
        return self._call(self._count, [])

    async def acquire(self) -> str:
        token = uuid.uuid4().hex
        delay = POLL_MIN_S
        while True:
            if self._call(self._acquire, [self.limit, self.lease_s, token]):
                return token
            fut = self._local.add()
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout=delay)
            except asyncio.TimeoutError:
                self._local.discard(fut)
            delay = min(delay * 2, POLL_MAX_S)

    def release(self, token: str) -> None:
        try:
            self.client.zrem(self.key, token)
        except Exception as exc:  # the lease expires by itself; only capacity is lost for a while
            log.warning("endpoint limiter %r: could not release a slot (%s); its lease will expire", self.key, exc)
        woken = self._local.pop()
        if woken is not None:
            loop, fut = woken
            try:
                loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))
            except RuntimeError:
                pass

    async def _keep_alive(self, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not self._call(self._renew, [self.lease_s, token]):
                    log.warning("endpoint limiter %r: a slot's lease expired while held", self.key)
                    return
            except LimiterUnavailable as exc:
                log.warning("%s; will retry the renewal", exc)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        token = await self.acquire()
        renewer = asyncio.ensure_future(self._keep_alive(token))
        try:
            yield
        finally:
            renewer.cancel()
            self.release(token)


# ---- one limiter per endpoint per process ---------------------------------------------------------

_LIMITERS: dict[tuple, object] = {}
_LIMITERS_LOCK = threading.Lock()


def slot_key(endpoint_name: str, base_url: str, model: str) -> str:
    """The Redis key of an endpoint's slots: the same server and model share one limit."""
    digest = hashlib.sha256(f"{base_url}|{model}".encode()).hexdigest()[:12]
    return f"coldlabel:slots:{endpoint_name}:{digest}"


def limiter_for(settings: Settings, endpoint_name: str) -> Limiter:
    """The process-wide limiter of ``endpoint_name``: Redis-backed when ``workers.broker_url`` is a Redis
    URL, else in-process."""
    endpoint = settings.endpoint(endpoint_name)
    broker = settings.workers.broker_url
    shared = broker.startswith(("redis://", "rediss://", "unix://"))
    ident = (broker if shared else "", endpoint_name, endpoint.base_url, endpoint.model, endpoint.concurrency,
             settings.workers.slot_lease_s)
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(ident)
        if limiter is None:
            if shared:
                client = redis.Redis.from_url(broker, socket_timeout=10, socket_connect_timeout=5,
                                              health_check_interval=30)
                limiter = RedisLimiter(client, slot_key(endpoint_name, endpoint.base_url, endpoint.model),
                                       endpoint.concurrency, settings.workers.slot_lease_s)
            else:
                limiter = LocalLimiter(endpoint.concurrency)
            _LIMITERS[ident] = limiter
        return limiter
