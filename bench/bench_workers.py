"""Benchmark of the labeling service: LLM-server utilisation, orchestration overhead, resume cost.

    .venv/bin/python bench/bench_workers.py [--users 96] [--capacity 8] [--pools threads,prefork]

Real Redis and PostgreSQL (a leased Redis db and a fresh database, as in the tests), real `coldlabel worker`
processes, the real pipeline on the `tiny` synthetic dataset (built into a temp dir), and the fake LLM
server over HTTP in capacity mode: at most C requests served at once, each taking
``base + per_token * completion_tokens`` seconds.

* utilisation = achieved request throughput / (C / mean service time) = server busy time / (C * wall time),
  wall time from the first claim to the last finished user; endpoint concurrency = C.
* overhead = CPU time of the worker process per user against an instant server: everything the service
  does outside the LLM (Celery, SQL, prompts, parsing), in ms.
* resume = wall time of `coldlabel label resume` on a finished 1,000-user run, and the LLM requests it caused.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from coldlabel_testing.fake_server import FakeLLMServer  # noqa: E402
from tests.support import services  # noqa: E402
from tests.support.cli import COLDLABEL, build_tiny_from, write_config  # noqa: E402


def bench_config(path: Path, root: Path, url: str, concurrency: int) -> Path:
    return write_config(path, {"workers": {"visibility_timeout_s": 600}, "data": {"root": str(root)},
                               "endpoints.fake": {"base_url": url, "model": "fake-model", "dialect": "vllm",
                                                  "concurrency": concurrency}})


class Service:
    """Fresh store + broker, a config for a given server, worker processes."""

    def __init__(self, root: Path, pg_url: str, redis_url: str):
        self.root, self.pg_url, self.redis_url = root, pg_url, redis_url
        self.procs: list[subprocess.Popen] = []

    def env(self, server: FakeLLMServer, concurrency: int) -> dict:
        cfg = self.root / f"cfg-{server.base_url.rsplit(':', 1)[1].split('/')[0]}.toml"
        bench_config(cfg, self.root, server.base_url, concurrency)
        return {**os.environ, "COLDLABEL_CONFIG": str(cfg), "COLDLABEL_WORKERS__BROKER_URL": self.redis_url,
                "COLDLABEL_STORE__URL": self.pg_url}

    def worker(self, env: dict, name: str, pool: str, concurrency: int) -> psutil.Process:
        log = open(self.root / f"worker-{name}.log", "wb")
        proc = subprocess.Popen([*COLDLABEL, "worker", "--pool", pool, "--concurrency", str(concurrency),
                                 "--hostname", f"{name}@%h", "--loglevel", "WARNING"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return psutil.Process(proc.pid)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def cpu_s(proc: psutil.Process) -> float:
    total = proc.cpu_times().user + proc.cpu_times().system
    for child in proc.children(recursive=True):
        try:
            total += child.cpu_times().user + child.cpu_times().system
        except psutil.NoSuchProcess:
            pass
    return total


def run_users(svc: Service, env: dict, store, users: int, timeout_s: float = 600, *extra: str):
    out = subprocess.run([*COLDLABEL, *extra, "label", "start", "--dataset", "tiny", "--users", str(users)],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    run_id = out.split("run ", 1)[1].split()[0]
    deadline = time.monotonic() + timeout_s
    while (p := store.run_progress(run_id)).done < users:
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} stuck at {p.by_status}")
        time.sleep(0.2)
    return run_id, p


def warm_up(svc: Service, env: dict, store, workers: int) -> None:
    """Every worker thread/process loads the space once; keep that out of the measurements. Another prompt
    version gives other cache keys, so the measured run gets no cache hits from the warm-up."""
    run_users(svc, env, store, 16 * workers, 600, "--set", "labeler.prompt_version=warmup")


def utilisation(root: Path, pool: str, n_workers: int, concurrency: int, users: int, capacity: int,
                base_s: float, per_token_s: float, completion_tokens: int | None) -> dict:
    from coldlabel.store import Store, upgrade

    with services.fresh_postgres_db() as pg, services.fresh_redis_db() as rd, \
            FakeLLMServer(capacity=capacity, base_latency_s=base_s, per_token_s=per_token_s,
                          completion_tokens=completion_tokens) as srv:
        upgrade(pg)
        svc = Service(root, pg, rd.url)
        store = Store(pg)
        try:
            env = svc.env(srv, capacity)
            workers = [svc.worker(env, f"w{i}", pool, concurrency) for i in range(n_workers)]
            time.sleep(3)
            warm_up(svc, env, store, n_workers)
            busy0, req0 = srv.busy_s, srv.request_count
            run_id, p = run_users(svc, env, store, users)
            wall = (p.last_finished_at - p.first_started_at).total_seconds()
            busy, reqs = srv.busy_s - busy0, srv.request_count - req0
            return {"pool": pool, "workers": n_workers, "concurrency": concurrency, "users": users,
                    "requests": reqs, "wall_s": wall, "mean_service_ms": 1000 * busy / reqs,
                    "throughput_rps": reqs / wall, "ideal_rps": capacity / (busy / reqs),
                    "utilisation": busy / (capacity * wall), "max_in_flight": srv.max_in_flight,
                    "worker_cpu_s": sum(cpu_s(w) for w in workers)}
        finally:
            svc.stop()
            store.close()


def overhead(root: Path, users: int) -> dict:
    from coldlabel.store import Store, upgrade

    with services.fresh_postgres_db() as pg, services.fresh_redis_db() as rd, FakeLLMServer() as srv:
        upgrade(pg)
        svc = Service(root, pg, rd.url)
        store = Store(pg)
        try:
            env = svc.env(srv, 8)
            worker = svc.worker(env, "w", "threads", 8)
            time.sleep(3)
            warm_up(svc, env, store, 1)
            cpu0, req0 = cpu_s(worker), srv.request_count
            run_id, p = run_users(svc, env, store, users)
            cpu = cpu_s(worker) - cpu0
            reqs = srv.request_count - req0
            return {"users": users, "requests": reqs, "worker_cpu_ms_per_user": 1000 * cpu / users,
                    "worker_cpu_ms_per_request": 1000 * cpu / reqs,
                    "wall_s": (p.last_finished_at - p.first_started_at).total_seconds()}
        finally:
            svc.stop()
            store.close()


def resume_cost(root: Path, n: int = 1000) -> dict:
    """A finished n-user run (users registered and marked done through the store, as workers do), then
    `coldlabel label resume` through the CLI with a broker configured."""
    from coldlabel.config import load_settings
    from coldlabel.store import Store, upgrade
    from labeler.runs import prepare_resume

    with services.fresh_postgres_db() as pg, services.fresh_redis_db() as rd, FakeLLMServer() as srv:
        upgrade(pg)
        svc = Service(root, pg, rd.url)
        env = svc.env(srv, 8)
        store = Store(pg)
        settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("COLDLABEL_")})
        run = store.create_run(dataset="tiny", endpoint="fake", model="fake-model", prompt_version="1/v1",
                               config={})
        store.add_users(run.id, [(i, f"U{i:05d}") for i in range(n)])
        for i in range(n):
            store.claim_user(run.id, i, "bench", lease_s=60)
            store.finish_user(run.id, i, {"llm_calls": 6})
        t0 = time.perf_counter()
        enq = prepare_resume(store, settings, run.id)
        in_process = time.perf_counter() - t0
        t0 = time.perf_counter()
        done = subprocess.run([*COLDLABEL, "label", "resume", run.id], env=env, cwd=ROOT, capture_output=True,
                              text=True, check=True)
        cli_s = time.perf_counter() - t0
        import redis

        queued = redis.Redis.from_url(rd.url).llen("coldlabel")
        store.close()
        return {"users": n, "to_enqueue": len(enq.users), "prepare_resume_s": in_process, "cli_resume_s": cli_s,
                "llm_requests": srv.request_count, "queued_messages": queued,
                "said": done.stdout.strip().splitlines()[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=96)
    ap.add_argument("--capacity", type=int, default=8)
    ap.add_argument("--base-ms", type=float, default=20)
    ap.add_argument("--per-token-ms", type=float, default=2)
    ap.add_argument("--completion-tokens", type=int, default=None,
                    help="tokens the fake server bills (and waits for) per answer; default: len(answer)/4 (~30)")
    ap.add_argument("--concurrency", type=int, default=8, help="users in flight per worker")
    ap.add_argument("--pools", default="threads", help="comma-separated pools to measure (threads,prefork)")
    ap.add_argument("--overhead-users", type=int, default=96)
    ap.add_argument("--resume-users", type=int, default=1000)
    args = ap.parse_args()
    services.ensure_postgres()
    services.ensure_redis()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        root = Path(tmp)
        build_tiny_from(bench_config(root / "build.toml", root, "http://x/v1", 1))
        rows = []
        for pool in args.pools.split(","):
            for n in (1, 2):
                rows.append(utilisation(root, pool, n, args.concurrency, args.users, args.capacity,
                                        args.base_ms / 1000, args.per_token_ms / 1000, args.completion_tokens))
                print(rows[-1], flush=True)
        ov = overhead(root, args.overhead_users)
        print(ov, flush=True)
        rs = resume_cost(root, args.resume_users)
        print(rs, flush=True)
    print(f"\n`{' '.join(['.venv/bin/python', 'bench/bench_workers.py', *sys.argv[1:]])}` "
          f"(fake server: C={args.capacity}, {args.base_ms:g} ms + {args.per_token_ms:g} ms/token x "
          f"{args.completion_tokens or 'len/4'} tokens; tiny dataset, "
          f"6 LLM calls per user; PostgreSQL store, Redis broker)\n")
    print("| pool | workers x users in flight | users | requests | wall s | mean service ms | req/s | ideal req/s "
          "| utilisation | max in flight |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pool']} | {r['workers']} x {r['concurrency']} | {r['users']} | {r['requests']} | "
              f"{r['wall_s']:.1f} | {r['mean_service_ms']:.0f} | {r['throughput_rps']:.1f} | {r['ideal_rps']:.1f} | "
              f"**{r['utilisation']:.2f}** | {r['max_in_flight']} |")
    print(f"\n| orchestration overhead (instant server, 1 threads worker) | value |\n|---|---|\n"
          f"| worker CPU per user | {ov['worker_cpu_ms_per_user']:.0f} ms |\n"
          f"| worker CPU per LLM request | {ov['worker_cpu_ms_per_request']:.1f} ms |\n"
          f"| wall for {ov['users']} users | {ov['wall_s']:.1f} s |")
    print(f"\n| resume of a finished {rs['users']}-user run | value |\n|---|---|\n"
          f"| users to enqueue | {rs['to_enqueue']} |\n| prepare_resume (in process) | {rs['prepare_resume_s']:.3f} s |\n"
          f"| `coldlabel label resume` (CLI, incl. start-up) | {rs['cli_resume_s']:.2f} s |\n"
          f"| LLM requests | {rs['llm_requests']} |\n| messages queued | {rs['queued_messages']} |")


if __name__ == "__main__":
    main()
