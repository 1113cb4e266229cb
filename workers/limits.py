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
  ``workers.slot_lease_s``. Every release is announced on a Redis channel, so a waiter in any process is
  woken at once; polling with backoff only catches expired leases.

:func:`limiter_for` gives one limiter per endpoint per process.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, Protocol

import redis

from coldlabel.config import Settings
from coldlabel.errors import LimiterUnavailable

log = logging.getLogger("coldlabel.limits")

POLL_MIN_S = 0.05  # first re-check of Redis after a failed acquire, when no release woke the waiter sooner
POLL_MAX_S = 0.5   # the backoff ceiling (a freed slot is announced; polling only finds expired leases)


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
# Renew every token of one process in one call; returns how many were no longer held (their lease expired).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lost = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    lost = lost + 1
  end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
return lost
"""
# Free a slot and say so on the endpoint's channel (the message names the releasing process).
_RELEASE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('PUBLISH', KEYS[2], ARGV[2])
end
return 1
"""
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class RedisLimiter:
    """At most ``limit`` slots held at once across every process that uses the same Redis ``key``.

    A waiter is woken as soon as a slot is freed anywhere: a release in this process wakes one local waiter
    directly; a release in another process is announced on the channel ``<key>:released``, which one thread
    per process listens to and turns into a wake-up of one local waiter. Polling (``POLL_MIN_S`` doubling
    to ``POLL_MAX_S``) is only the safety net for what no message announces: an expired lease of a dead
    holder, a message lost while Redis was away. (Waiters that polled every 2-50 ms left freed slots idle
    for tens of ms when the holder was another worker: server utilisation 0.6-0.7 at 86 ms per answer.)
    Leases of the slots held in this process are renewed together, by one thread, every ``lease/3`` s.
    """

    def __init__(self, client, key: str, limit: int, lease_s: float = 30.0) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.client = client  # a sync redis.Redis: thread-safe pool, ~0.1 ms per call on a local server
        self.key = key
        self.channel = f"{key}:released"
        self.limit = limit
        self.lease_s = lease_s
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._count = client.register_script(_COUNT)
        self._local = _Waiters()
        self._lock = threading.Lock()
        self._held: set[str] = set()  # tokens of slots held in this process (renewed by the keeper thread)
        self._pid = -1
        self._ident = ""
        self._threads: list[threading.Thread] = []

    def _call(self, script, args: list, keys: list[str] | None = None) -> int:
        try:
            return int(script(keys=keys or [self.key], args=args))
        except redis.RedisError as exc:
            raise LimiterUnavailable(f"endpoint limiter {self.key!r}: Redis unreachable ({exc})") from exc

    def held(self) -> int:
        """Slots held right now (expired leases dropped)."""
        return self._call(self._count, [])

    def _start_threads(self) -> None:
        """The listener and the lease keeper of this process (again in a forked child: threads do not
        survive a fork)."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._ident = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
            self._local = _Waiters()
            self._held = set()
            self._threads = [threading.Thread(target=self._listen, name="slot-listener", daemon=True),
                             threading.Thread(target=self._keep_leases, name="slot-leases", daemon=True)]
            for thread in self._threads:
                thread.start()

    async def acquire(self) -> str:
        """A slot's token once one is free (the slot is held until :meth:`release`, or its lease ends)."""
        self._start_threads()
        token = uuid.uuid4().hex
        delay = POLL_MIN_S
        while True:
            if self._call(self._acquire, [self.limit, self.lease_s, token]):
                return token
            fut = self._local.add()
            timer = asyncio.get_running_loop().call_later(delay, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                self._local.discard(fut)
            delay = min(delay * 2, POLL_MAX_S)

    def release(self, token: str) -> None:
        with self._lock:
            self._held.discard(token)
        try:
            self._call(self._release, [token, self._ident], keys=[self.key, self.channel])
        except LimiterUnavailable as exc:  # the lease expires by itself; only capacity is lost for a while
            log.warning("%s; its lease will expire", exc)
        self._wake_one()

    def _wake_one(self) -> None:
        """Tell the oldest waiter of this process to try again (a hint, not a hand-over of the slot)."""
        while (woken := self._local.pop()) is not None:
            loop, fut = woken
            try:
                loop.call_soon_threadsafe(_wake, fut)
                return
            except RuntimeError:  # that waiter's loop is closed: try the next one
                continue

    def _listen(self) -> None:
        """Slots freed by other processes wake local waiters (this process's own releases already did)."""
        me = self._ident.encode()
        while True:
            pubsub = None
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                while True:
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is not None and msg.get("data") != me:
                        self._wake_one()
            except Exception as exc:  # Redis away: waiters fall back on polling until it is back
                log.debug("endpoint limiter %r: release channel lost (%s); resubscribing", self.key, exc)
                time.sleep(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass

    def _keep_leases(self) -> None:
        while True:
            time.sleep(self.lease_s / 3)
            with self._lock:
                tokens = list(self._held)
            if not tokens:
                continue
            try:
                lost = self._call(self._renew, [self.lease_s, *tokens])
            except LimiterUnavailable as exc:
                log.warning("%s; will retry the renewal", exc)
                continue
            if lost:
                log.warning("endpoint limiter %r: %d slot lease(s) expired while held", self.key, lost)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        token = await self.acquire()
        with self._lock:
            self._held.add(token)
        try:
            yield
        finally:
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
