"""The labeling service end to end: real Redis, real PostgreSQL, real ``celery worker`` processes running the
real five-stage pipeline on the ``tiny`` synthetic dataset. The LLM is the scripted fake server over HTTP
(deterministic answers, request counting, a capacity limit, latency), except in the one test that uses the
real llama.cpp server with SmolLM2.

Every run is checked against a reference: the same users labeled inline, in this process, on SQLite. Equal
label sets mean nothing was lost and nothing was labeled twice, whatever happened in between (a worker
killed with SIGKILL, Redis restarted, an endpoint switched).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coldlabel_testing.fake_server import FakeLLMServer
from tests.support.cli import COLDLABEL, build_tiny_from, write_config
from tests.support.services import free_port

pytestmark = [pytest.mark.services, pytest.mark.slow]  # real Celery worker processes

ROOT = Path(__file__).resolve().parent.parent
N_USERS = 32
WORKER_SETTINGS = {"transport": {"max_attempts": 2, "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
                   "workers": {"retry_backoff_s": 0, "max_task_retries": 1, "soft_shutdown_timeout_s": 2,
                               "slot_lease_s": 3}}


def worker_config(path: Path, data_root: Path, endpoints: dict[str, str], *, concurrency: int = 4,
                  visibility_timeout_s: int | None = 120, dialect: str = "vllm", model: str | None = None,
                  workers: dict | None = None, labeler: dict | None = None) -> Path:
    """A config file for this test's CLI calls and workers. The visibility timeout is above a user's wall
    time (first task included: it loads the candidate space); None keeps the default. ``workers``: more
    [workers] settings; ``labeler``: [labeler] settings on top of the small caps."""
    extra = dict(workers or {})
    if visibility_timeout_s is not None:
        extra["visibility_timeout_s"] = visibility_timeout_s
    sections = {f"endpoints.{name}": {"base_url": url, "model": model or f"model-{name}", "dialect": dialect,
                                      "concurrency": concurrency} for name, url in endpoints.items()}
    return write_config(path, WORKER_SETTINGS, {"workers": extra, "labeler": labeler or {},
                                                 "data": {"root": str(data_root)}}, sections)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """The tiny synthetic dataset, prepared and built once for the module."""
    root = tmp_path_factory.mktemp("data")
    build_tiny_from(worker_config(root / "build.toml", root, {}))
    return root


def settings_for(cfg: Path, **env: str):
    from coldlabel.config import load_settings

    return load_settings(cfg, environ={f"COLDLABEL_{k}": v for k, v in env.items()})


def labels(store, run_id: str) -> tuple[set, set]:
    edges = {(e.user_idx, e.item_idx, round(e.weight, 6), e.from_fallback) for e in store.export_edges(run_id)}
    trips = {(t.user_idx, t.pos_idx, t.neg_idx, round(t.weight, 6)) for t in store.export_triplets(run_id)}
    return edges, trips


@pytest.fixture(scope="module")
def reference(tiny_root, tmp_path_factory):
    """Labels of the first N_USERS users, labeled inline in this process (SQLite, no broker)."""
    from coldlabel.store import Store
    from labeler.runs import start_run
    from workers.inline import run_inline

    tmp = tmp_path_factory.mktemp("reference")
    with FakeLLMServer() as srv:
        cfg = worker_config(tmp / "cfg.toml", tiny_root, {"fake": srv.base_url})
        settings = settings_for(cfg, STORE__URL=f"sqlite:///{tmp / 'ref.db'}")
        store = Store(settings.store_url())
        run = start_run(store, settings, "tiny", users=N_USERS)
        result = run_inline(settings, run.id, store.incomplete_users(run.id))
        assert result.done == N_USERS, result.errors
        edges, trips = labels(store, run.id)
        calls_per_user = srv.request_count / N_USERS
        store.close()
    assert edges and trips
    return {"edges": edges, "triplets": trips, "calls_per_user": calls_per_user}


# ---- processes ------------------------------------------------------------------------------------

class Worker:
    """A real `coldlabel worker` process (Celery, threads pool)."""

    def __init__(self, env: dict, log_dir: Path, name: str, concurrency: int = 4):
        self.name = name
        self.log = log_dir / f"worker-{name}.log"
        cmd = [*COLDLABEL, "worker", "--concurrency", str(concurrency), "--pool", "threads",
               "--hostname", f"{name}@%h", "--loglevel", "INFO"]
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if " ready." in self.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker {self.name} not ready after {timeout_s}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no soft shutdown, no acks, no cleanup (a crashed host)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def service(tiny_root, tmp_path, postgres_url, redis_url):
    """Config + env for worker processes (this test's PostgreSQL database and Redis db), and cleanup."""
    from coldlabel.store import Store, upgrade

    upgrade(postgres_url)
    ctx = {"tmp": tmp_path, "workers": [], "servers": []}

    def env_for(cfg: Path, broker: str = redis_url, store_url: str = postgres_url) -> dict:
        return {**os.environ, "COLDLABEL_CONFIG": str(cfg), "COLDLABEL_WORKERS__BROKER_URL": broker,
                "COLDLABEL_STORE__URL": store_url, "PYTHONUNBUFFERED": "1"}

    def server(**kw) -> FakeLLMServer:
        srv = FakeLLMServer(**kw).start()
        ctx["servers"].append(srv)
        return srv

    def worker(cfg: Path, name: str, broker: str = redis_url, concurrency: int = 4,
               store_url: str = postgres_url) -> Worker:
        w = Worker(env_for(cfg, broker, store_url), tmp_path, name, concurrency)
        ctx["workers"].append(w)
        return w

    store = Store(postgres_url)
    ctx.update(env_for=env_for, server=server, worker=worker, store=store, redis_url=redis_url,
               postgres_url=postgres_url, root=tiny_root)
    yield ctx
    for w in ctx["workers"]:
        w.stop()
    for srv in ctx["servers"]:
        srv.stop()
    store.close()


def cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*COLDLABEL, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"coldlabel {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def start(ctx, cfg: Path, users: int = N_USERS, *extra: str) -> str:
    out = cli(ctx["env_for"](cfg), "label", "start", "--dataset", "tiny", "--users", str(users), *extra).stdout
    run_id = out.split("run ", 1)[1].split()[0]
    ctx["store"].get_run(run_id)
    return run_id


def wait_for(ctx, run_id: str, predicate, timeout_s: float = 90, what: str = "the run to finish"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = ctx["store"].run_progress(run_id)
        if predicate(progress):
            return progress
        time.sleep(0.25)
    logs = "\n".join(f"--- {w.name}\n{w.tail(15)}" for w in ctx["workers"])
    raise AssertionError(f"timed out waiting for {what}: {progress.by_status}\n{logs}")


def all_done(progress) -> bool:
    return progress.done == progress.total


def run_status_after_settling(store, run_id: str, timeout_s: float = 30) -> str:
    """The run's status once its last worker has decided how it ended: that happens just after the last
    user is marked done, so a watcher that saw every user done may still find the run active for a moment."""
    deadline = time.monotonic() + timeout_s
    while (status := store.get_run(run_id).status) == "active" and time.monotonic() < deadline:
        time.sleep(0.1)
    return status


def assert_complete_and_equal(ctx, run_id: str, reference) -> None:
    store = ctx["store"]
    by_status = store.users_by_status(run_id)
    assert len(by_status["done"]) == N_USERS and not any(by_status[s] for s in ("pending", "running", "failed", "dead"))
    edges, trips = labels(store, run_id)
    assert edges == reference["edges"], "labels differ from the inline reference (lost or duplicated work)"
    assert trips == reference["triplets"]
    assert run_status_after_settling(store, run_id) == "done"


# ---- tests ----------------------------------------------------------------------------------------

def test_two_workers_label_every_user_exactly_once_within_the_endpoint_limit(service, reference):
    """32 users, 2 workers x 4 threads, endpoint concurrency 3: all done, each user labeled once (one
    profile request per user at the server), both workers did work, never more than 3 requests at once."""
    srv = service["server"](capacity=16, base_latency_s=0.02)
    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": srv.base_url}, concurrency=3)
    service["worker"](cfg, "w1")
    service["worker"](cfg, "w2")
    run_id = start(service, cfg)
    wait_for(service, run_id, all_done)
    assert_complete_and_equal(service, run_id, reference)
    users = [service["store"].get_user(run_id, u) for u in service["store"].users_by_status(run_id)["done"]]
    assert all(u.attempts == 1 for u in users)
    assert {u.worker.split("@")[0] for u in users} == {"w1", "w2"}
    assert srv.request_count == sum(u.counters.llm_calls for u in users) == reference["calls_per_user"] * N_USERS
    assert srv.max_in_flight <= 3
    status = json.loads(cli(service["env_for"](cfg), "label", "status", run_id, "--json").stdout)
    assert status["done"] == N_USERS and status["status"] == "done"
    out = service["tmp"] / "export"
    cli(service["env_for"](cfg), "label", "export", run_id, "--out", str(out))
    rows = (out / "edges.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:5] == ["user", "user_idx", "item", "item_idx", "weight"]
    assert len(rows) - 1 == len(reference["edges"])


def test_sigkill_of_a_worker_mid_run_loses_and_duplicates_nothing(service, reference):
    """Finding 3: a worker is killed with SIGKILL while it holds users. With the default settings (lease
    30 s, reaper every 15 s, visibility timeout 600 s) its users are re-enqueued by the surviving worker's
    reaper within about a minute, not after the broker's visibility timeout, and nothing is labeled twice."""
    srv = service["server"](capacity=8, base_latency_s=0.25)
    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": srv.base_url}, concurrency=8,
                        visibility_timeout_s=None)
    victim = service["worker"](cfg, "victim")
    run_id = start(service, cfg)
    wait_for(service, run_id, lambda p: p.done >= 3 and p.by_status["running"] >= 2, what="users in flight")
    held = set(service["store"].users_by_status(run_id)["running"])
    victim.kill()
    killed_at = time.monotonic()
    service["worker"](cfg, "survivor")
    wait_for(service, run_id, all_done, timeout_s=120)
    healed_s = time.monotonic() - killed_at
    assert_complete_and_equal(service, run_id, reference)
    for user_idx in held:  # the killed worker's users were taken over, not lost
        user = service["store"].get_user(run_id, user_idx)
        assert user.worker.startswith("survivor") and user.attempts >= 2
    assert healed_s < 90, f"took {healed_s:.0f}s after the kill"  # lease_s + reap_interval_s + the work
    print(f"\nkilled worker's {len(held)} users re-run and the run done {healed_s:.1f}s after SIGKILL")


def test_a_60s_store_outage_mid_run_loses_and_duplicates_nothing(service, reference):
    """Finding 1: the workers reach PostgreSQL through a proxy that is cut for 60 s mid-run. Users used to
    spend their three retries in ~35 s, then their messages were acked and dropped (20 users stayed pending
    and 4 running forever). Now the users in flight wait for the store holding their claims, no retry is
    spent, no message is acknowledged unrecorded, and the run completes with the default settings."""
    from tests.support.services import PG_HOST, PG_PORT
    from tests.support.tcp_proxy import TcpProxy

    srv = service["server"](capacity=8, base_latency_s=0.2)
    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": srv.base_url},
                        visibility_timeout_s=None)
    with TcpProxy(PG_HOST, PG_PORT) as proxy:
        via_proxy = service["postgres_url"].replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}")
        service["worker"](cfg, "w1", store_url=via_proxy)
        service["worker"](cfg, "w2", store_url=via_proxy)
        run_id = start(service, cfg)
        wait_for(service, run_id, lambda p: p.done >= 4 and p.by_status["running"] >= 2, what="users in flight")
        proxy.cut()
        time.sleep(60)  # the outage itself: the fault under test lasts this long
        mid = service["store"].run_progress(run_id)  # (the test's own store is not behind the proxy)
        assert mid.done < N_USERS and not mid.by_status["dead"] and not mid.by_status["failed"]
        proxy.restore()
        restored_at = time.monotonic()
        wait_for(service, run_id, all_done, timeout_s=180)
        healed_s = time.monotonic() - restored_at
    assert_complete_and_equal(service, run_id, reference)
    logs = "".join(w.log.read_text(errors="replace") for w in service["workers"])
    assert "unreachable" in logs and "waiting for it" in logs  # the outage hit users in flight, who waited
    print(f"\nrun done {healed_s:.1f}s after the store came back (outage 60 s)")
    store = service["store"]
    users = [store.get_user(run_id, u) for u in range(N_USERS)]
    assert all(u.attempts == 1 for u in users), [(u.user_idx, u.attempts) for u in users if u.attempts != 1]
    assert srv.request_count <= reference["calls_per_user"] * N_USERS + 8  # at most what was in flight, again


def test_a_worker_refuses_to_start_without_its_store_or_endpoint(service):
    """Finding 1: a worker started with an unreachable database reported ready and dropped what it took.
    Now it checks store, broker and endpoint first and exits non-zero with a one-line reason."""
    srv = service["server"]()
    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": srv.base_url},
                        workers={"startup_timeout_s": 2})
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    dead_url = f"http://127.0.0.1:{free_port()}/v1"
    bad_endpoint = worker_config(service["tmp"] / "dead.toml", service["root"], {"fake": dead_url},
                                 workers={"startup_timeout_s": 2})
    for env, expected in ((service["env_for"](cfg, store_url=closed), "worker not started: store: database "
                                                                      "postgresql+psycopg://postgres@127.0.0.1"),
                          (service["env_for"](bad_endpoint), f"worker not started: endpoint: endpoint 'fake' at "
                                                             f"{dead_url} unreachable")):
        done = subprocess.run([*COLDLABEL, "worker", "--concurrency", "1"], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert expected in done.stderr and "waited 2s" in done.stderr
        assert " ready." not in done.stdout + done.stderr


def test_resume_on_another_endpoint_calls_nothing_for_done_users(service, reference):
    """Stop everything mid-run (workers killed, queue flushed), then `label resume --endpoint b`: the done
    users cost zero requests, the rest go to the new endpoint, and the switch is recorded in the run."""
    import redis

    a = service["server"](capacity=4, base_latency_s=0.15)
    b = service["server"]()
    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": a.base_url, "b": b.base_url})
    w = service["worker"](cfg, "first")
    run_id = start(service, cfg)
    wait_for(service, run_id, lambda p: p.done >= 5, what="5 users done")
    w.kill()
    redis.Redis.from_url(service["redis_url"]).flushdb()  # the queue is gone too
    store = service["store"]
    before = {u: store.get_user(run_id, u) for u in store.users_by_status(run_id)["done"]}
    a_requests = a.request_count
    out = cli(service["env_for"](cfg), "label", "resume", run_id, "--endpoint", "b").stdout
    assert f"{N_USERS - len(before)} users to finish on endpoint b" in out
    service["worker"](cfg, "second")
    wait_for(service, run_id, all_done)
    assert a.request_count == a_requests  # nothing more went to the old endpoint
    for u, old in before.items():  # done users were not touched
        assert store.get_user(run_id, u) == old
    finished_now = [store.get_user(run_id, u) for u in store.users_by_status(run_id)["done"] if u not in before]
    assert b.request_count == sum(u.counters.llm_calls for u in finished_now) > 0
    run = store.get_run(run_id)
    assert run.endpoint == "b" and run.model == "model-b"
    assert run.endpoint_switches[-1]["from_endpoint"] == "fake"
    # Answers are deterministic and equal on both fake endpoints, so the labels match the reference.
    assert_complete_and_equal(service, run_id, reference)


def test_unreachable_endpoint_pauses_the_run_and_resume_finishes(service, reference):
    """Finding 6 through the queue: a run on an endpoint that refuses connections is paused by the circuit
    breaker (5 users in a row, the default) instead of dead-lettering every user; resume finishes it."""
    dead_url = f"http://127.0.0.1:{free_port()}/v1"
    good = service["server"](model="model-good")
    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": good.base_url, "dead": dead_url,
                                                                       "good": good.base_url})
    env = service["env_for"](cfg)
    check = cli(env, "llm", "check", "dead", check=False)
    assert check.returncode == 1 and "UNREACHABLE" in check.stdout and dead_url in check.stdout
    assert cli(env, "llm", "check", "good").stdout.strip().endswith("OK")
    service["worker"](cfg, "w")  # its default endpoint answers: it starts
    run_id = start(service, cfg, 12, "--endpoint", "dead")
    store = service["store"]
    wait_for(service, run_id, lambda p: store.get_run(run_id).status == "paused" and not p.by_status["running"],
             what="the circuit breaker to pause the run")
    run = store.get_run(run_id)
    assert "circuit breaker" in run.status_reason and "unreachable" in run.status_reason and dead_url in run.status_reason
    by_status = store.users_by_status(run_id)
    assert len(by_status["dead"]) <= 2 and len(by_status["done"]) == 0  # not 12 users burned
    assert labels(store, run_id) == (set(), set())
    cli(env, "label", "resume", run_id, "--endpoint", "good")
    wait_for(service, run_id, all_done)
    edges, _ = labels(store, run_id)
    assert edges == {e for e in reference["edges"] if e[0] < 12}
    assert run_status_after_settling(store, run_id) == "done"


def test_redis_restart_mid_run_loses_nothing(service, reference, tmp_path):
    """A private Redis (no persistence) is shut down mid-run and started again: its queue is empty, the
    users' state in SQL is intact, and `label resume` completes the run."""
    port = free_port()
    start_redis = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(tmp_path), "--daemonize", "yes", "--maxmemory-policy", "noeviction"]
    subprocess.run(start_redis, check=True, capture_output=True)
    broker = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_redis(port)
        srv = service["server"](capacity=8, base_latency_s=0.2)
        cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": srv.base_url})
        env = service["env_for"](cfg, broker)
        service["worker"](cfg, "w", broker=broker)
        out = cli(env, "label", "start", "--dataset", "tiny", "--users", str(N_USERS)).stdout
        run_id = out.split("run ", 1)[1].split()[0]
        wait_for(service, run_id, lambda p: p.done >= 4, what="4 users done")
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)
        time.sleep(1.5)
        subprocess.run(start_redis, check=True, capture_output=True)
        _wait_redis(port)
        # In-flight users end (done, or failed because the limiter/broker vanished); nothing stays claimed.
        wait_for(service, run_id, lambda p: p.by_status["running"] == 0, what="in-flight users to settle")
        assert service["store"].run_progress(run_id).done < N_USERS
        cli(env, "label", "resume", run_id)
        wait_for(service, run_id, all_done)
        assert_complete_and_equal(service, run_id, reference)
    finally:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def _wait_redis(port: int, timeout_s: float = 10) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            redis.Redis(port=port, socket_connect_timeout=1).ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_redis_limiter_holds_across_processes_and_frees_a_dead_holders_slots(redis_url, tmp_path):
    """Two processes x 6 coroutines share 2 slots: never more than 2 held; a holder that dies without
    releasing loses its slot when the lease runs out."""
    script = tmp_path / "hold.py"
    script.write_text(f"""
import asyncio, sys, time, redis
from workers.limits import RedisLimiter
client = redis.Redis.from_url({redis_url!r})
lim = RedisLimiter(client, "t:slots", 2, lease_s=1.0)
async def one():
    async with lim.slot():
        n = client.incr("t:now"); client.rpush("t:seen", n)
        await asyncio.sleep(0.05)
        client.decr("t:now")
async def main():
    await asyncio.gather(*(one() for _ in range(6)))
asyncio.run(main())
""")
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=ROOT) for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]
    import redis

    from workers.limits import RedisLimiter

    client = redis.Redis.from_url(redis_url)
    seen = [int(x) for x in client.lrange("t:seen", 0, -1)]
    assert len(seen) == 12 and max(seen) <= 2
    lim = RedisLimiter(client, "t:dead", 1, lease_s=0.5)
    import asyncio

    assert asyncio.run(lim.acquire())  # taken and never released: its owner "died"
    assert lim.held() == 1
    time.sleep(0.7)
    assert lim.held() == 0  # the lease expired
    token = asyncio.run(asyncio.wait_for(lim.acquire(), 2))
    assert token and lim.held() == 1


@pytest.mark.llm
@pytest.mark.slow
def test_real_llm_run_through_a_worker(service, tmp_path):
    """One user through the queue, the real pipeline and SmolLM2 on llama.cpp (6 calls, tens of seconds on
    2 CPU cores): the run completes with real token counts and labels for that user."""
    from labeler.local_server import start_local_server

    port = free_port()
    with start_local_server(port, "smollm2-135m-instruct", tmp_path / "llm.log", n_ctx=4096) as llm:
        cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": llm.base_url}, concurrency=1,
                            visibility_timeout_s=900, dialect="llamacpp", model="smollm2-135m-instruct",
                            labeler={"max_tokens": 160})
        service["worker"](cfg, "w", concurrency=1)
        run_id = start(service, cfg, 1)
        wait_for(service, run_id, all_done, timeout_s=420)
        store = service["store"]
        progress = store.run_progress(run_id)
        assert progress.totals.llm_calls >= 5 and progress.totals.completion_tokens > 0
        assert store.get_user(run_id, 0).attempts == 1
        edges, _ = labels(store, run_id)
        assert {e[0] for e in edges} <= {0}


def test_a_builtin_labeler_runs_through_the_workers_as_inline(service):
    """No LLM anywhere: the oracle labeler through a real worker (whose readiness needs no endpoint server)
    gives exactly the labels of the same run inline, with the run's own oracle_precision."""
    from coldlabel.store import Store
    from labeler.runs import start_run
    from workers.inline import run_inline

    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {},
                        labeler={"endpoint": "oracle", "oracle_precision": 0.9})
    settings = settings_for(cfg, STORE__URL=f"sqlite:///{service['tmp'] / 'ref.db'}")
    with Store(settings.store_url()) as store:
        ref = start_run(store, settings, "tiny", users=12)
        assert run_inline(settings, ref.id, store.incomplete_users(ref.id)).done == 12
        expected = labels(store, ref.id)
    service["worker"](cfg, "w1")
    run_id = start(service, cfg, 12)
    wait_for(service, run_id, all_done)
    assert expected[0] and labels(service["store"], run_id) == expected
    assert service["store"].get_run(run_id).config["labeler"]["oracle_precision"] == 0.9
    assert run_status_after_settling(service["store"], run_id) == "done"


def test_coldlabel_run_sends_the_llm_users_through_the_queue_when_a_broker_is_configured(service):
    """`coldlabel run` with workers.broker_url set: the LLM users are labeled by a real worker process (not
    here), the command follows the run to its end, then trains E3 on those labels and writes the report."""
    srv = service["server"](capacity=16, base_latency_s=0.01)
    cfg = worker_config(service["tmp"] / "cfg.toml", service["root"], {"fake": srv.base_url})
    service["worker"](cfg, "w1")
    env = service["env_for"](cfg)
    done = subprocess.run([*COLDLABEL, "run", "-d", "tiny", "--labelers", "llm,random", "--users", "8", "--seeds", "0",
                           "--epochs", "1"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    store = service["store"]
    llm_run = next(r for r in store.list_runs(dataset="tiny") if r.endpoint == "fake")
    users = [store.get_user(llm_run.id, u) for u in store.users_by_status(llm_run.id)["done"]]
    assert len(users) == 8 and {u.worker.split("@")[0] for u in users} == {"w1"}
    assert srv.request_count > 0 and "enqueued 8 users" in done.stdout
    random_run = next(r for r in store.list_runs(dataset="tiny") if r.endpoint == "random")
    assert all(not store.get_user(random_run.id, u).worker.startswith("w1")
               for u in store.users_by_status(random_run.id)["done"])
    assert (service["root"] / "tiny" / "experiments" / llm_run.id / "results.json").exists()
    assert "cold / warm Recall@20" in done.stdout
