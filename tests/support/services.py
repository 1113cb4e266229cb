"""Real PostgreSQL and Redis for the tests: start them when they are down, hand each test a private,
freshly created database (PostgreSQL) or database number (Redis), and clean up afterwards.

The start commands are the CI's, verbatim. Several test sessions may share one server (people work in the
same machine), so nothing here ever touches data it did not create: PostgreSQL databases get unique names and
Redis database numbers are leased with a lock key before use.
"""
from __future__ import annotations

import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_START = ('redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
               '--dir /var/lib/redis --logfile /var/log/redis/ci.log')
REDIS_DBS = range(1, 16)  # db 0 holds only the lease keys
REDIS_LEASE_S = 3600  # a crashed session's lease expires by itself


class ServiceUnavailable(RuntimeError):
    """A service is down and could not be started; the message has the command that was tried."""


def pg_url(dbname: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{dbname}"


def _pg_admin():
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3,
                           autocommit=True)


def _wait_until(check, command: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            check()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not up yet"
            last = exc
            time.sleep(0.3)
    raise ServiceUnavailable(f"still down {timeout_s:.0f}s after `{command}`: {last}")


def _ensure(check, command: str, timeout_s: float) -> None:
    try:
        check()
        return
    except Exception:  # noqa: BLE001
        pass
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServiceUnavailable(f"`{command}` failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    _wait_until(check, command, timeout_s)


def _pg_ping() -> None:
    with _pg_admin() as conn:
        conn.execute("SELECT 1")


def _redis_ping() -> None:
    import redis

    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=2).ping()


def ensure_postgres(timeout_s: float = 60) -> None:
    """PostgreSQL answers on 127.0.0.1:5432, starting the cluster if needed."""
    _ensure(_pg_ping, PG_START, timeout_s)


def ensure_redis(timeout_s: float = 30) -> None:
    """Redis answers on 127.0.0.1:6379, starting it if needed."""
    _ensure(_redis_ping, REDIS_START, timeout_s)


@contextmanager
def fresh_postgres_db(prefix: str = "coldlabel_test") -> Iterator[str]:
    """A new, empty, uniquely named database; yields its SQLAlchemy URL and drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: ends leftover sessions


@dataclass(frozen=True)
class RedisTarget:
    url: str     # redis://127.0.0.1:6379/<db>
    db: int      # a database number leased to this test alone
    prefix: str  # unique key prefix, for code that wants one on top


@contextmanager
def fresh_redis_db() -> Iterator[RedisTarget]:
    """Lease a Redis database number nobody else is using, flush it before and after use."""
    import redis

    token = uuid.uuid4().hex
    admin = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    for db in REDIS_DBS:
        if admin.set(f"coldlabel-test:lease:{db}", token, nx=True, ex=REDIS_LEASE_S):
            break
    else:
        raise ServiceUnavailable(f"all Redis databases {REDIS_DBS.start}-{REDIS_DBS.stop - 1} are leased by "
                                 "other test sessions (keys coldlabel-test:lease:* in db 0)")
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield RedisTarget(url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}", db=db, prefix=f"t{token[:8]}:")
    finally:
        client.flushdb()
        client.close()
        if admin.get(f"coldlabel-test:lease:{db}") == token.encode():
            admin.delete(f"coldlabel-test:lease:{db}")
        admin.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
