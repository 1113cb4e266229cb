"""Shared fixtures. Services are real: PostgreSQL and Redis are started if down (tests/support/services.py)."""
from __future__ import annotations

import os
import shutil

import pytest
from filelock import FileLock

from tests.support import services

# Under pytest-xdist each process gets one math thread (torch, FAISS and numpy read these before they load):
# two processes with a thread pool per core each would fight over the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite store file of this test's own (not created yet)."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture(scope="session")
def postgres_server() -> None:
    services.ensure_postgres()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    with services.fresh_postgres_db() as url:
        yield url


@pytest.fixture(scope="session")
def redis_server() -> None:
    services.ensure_redis()


@pytest.fixture
def redis_target(redis_server) -> services.RedisTarget:
    """A Redis database number leased to this test (flushed before and after) and a unique key prefix."""
    with services.fresh_redis_db() as target:
        yield target


@pytest.fixture
def redis_url(redis_target) -> str:
    return redis_target.url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store_url(request) -> str:
    """The same test against an empty SQLite file and an empty PostgreSQL database."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(store_url):
    """A ready Store (schema at head) on each backend."""
    from coldlabel.store import Store, upgrade

    upgrade(store_url)  # PostgreSQL needs the explicit upgrade; on SQLite it is a no-op afterwards
    with Store(store_url) as opened:
        yield opened


# ---- shared real datasets and the real local LLM ------------------------------------------------

@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, worker_id):
    """A data root holding the `tiny` synthetic dataset, prepared and retrieval-built (read-only: copy to modify).

    Built once per test session even when pytest-xdist runs several processes (the documented pattern: a
    file lock in the directory all workers share); each process then works on its own copy, because tests
    keep their SQLite stores under the data root."""
    from tests.support.datasets import build_tiny

    root = tmp_path_factory.mktemp("tiny-data")
    if worker_id == "master":  # one process: build in place (the parent of basetemp outlives the session)
        build_tiny(root)
        return root
    shared = tmp_path_factory.getbasetemp().parent / "tiny-data-shared"  # this session's, shared by its workers
    with FileLock(f"{shared}.lock"):
        if not (shared / ".built").exists():
            shutil.rmtree(shared, ignore_errors=True)
            build_tiny(shared)
            (shared / ".built").touch()
    shutil.copytree(shared / "tiny", root / "tiny")
    return root


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory):
    """The real llama.cpp server with the packaged SmolLM2-135M model, on a free port."""
    from labeler.local_server import start_local_server
    from tests.support.services import free_port

    log_path = tmp_path_factory.mktemp("llm") / "server.log"
    with start_local_server(free_port(), "smollm2-135m-instruct", log_path) as server:
        yield server


def pytest_collection_modifyitems(items):
    """The real LLM is slow on 2 CPU cores: every `llm` test is also `slow`, so the fast loop leaves it out."""
    for item in items:
        if item.get_closest_marker("llm") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
