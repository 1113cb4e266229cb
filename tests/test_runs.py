"""Run lifecycle without a broker (the embedded default): `label start` runs inline on SQLite, status,
export, cancel, resume, endpoint switch, clear errors on bad input; and the in-process endpoint limiter.

The LLM is the scripted fake server over HTTP; the pipeline is the real one on the tiny synthetic dataset.
"""
from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coldlabel_testing.fake_server import FakeLLMServer
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parent.parent
COLDLABEL = [sys.executable, "-c", "from coldlabel.cli import main; main()"]
CONFIG = """
[retrieval]
tt_epochs = 2
candidates = 200
[labeler]
endpoint = "fake"
top_k_categories = 2
top_k_subcategories = 2
max_candidates_per_subcategory = 10
[transport]
max_attempts = 1
[workers]
broker_url = ""
max_task_retries = 1
retry_backoff_s = 0
inline_concurrency = 3
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from coldlabel.config import load_settings
    from coldlabel.data import prepare, synth
    from coldlabel.data.workspace import Workspace
    from retrieval import build

    root = tmp_path_factory.mktemp("data")
    cfg = root / "build.toml"
    cfg.write_text(CONFIG + f'[data]\nroot = "{root}"\n')
    settings = load_settings(cfg, environ={})
    ws = Workspace.of(root, "tiny")
    synth.generate("tiny", ws.root, seed=0)
    prepare.prepare(ws, settings.data)
    build.build(ws, settings)
    return root


@pytest.fixture
def fake():
    with FakeLLMServer(model="model-fake") as srv:
        yield srv


@pytest.fixture
def setup(data_root, tmp_path, fake):
    """A config with the fake endpoint, a dead one and a second good one; this test's own SQLite store."""
    from coldlabel.config import load_settings
    from coldlabel.store import Store

    other = FakeLLMServer(model="model-other").start()
    dead_url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = tmp_path / "cfg.toml"
    text = CONFIG + f'[data]\nroot = "{data_root}"\n[store]\nurl = "sqlite:///{tmp_path / "store.db"}"\n'
    for name, url, model in (("fake", fake.base_url, "model-fake"), ("other", other.base_url, "model-other"),
                             ("dead", dead_url, "model-dead")):
        text += f'[endpoints.{name}]\nbase_url = "{url}"\nmodel = "{model}"\ndialect = "vllm"\nconcurrency = 2\n'
    cfg.write_text(text)
    settings = load_settings(cfg, environ={})
    store = Store(settings.store_url())
    yield {"cfg": cfg, "settings": settings, "store": store, "other": other, "dead_url": dead_url,
           "root": data_root}
    store.close()
    other.stop()


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "COLDLABEL_CONFIG": str(cfg), "HOME": str(cfg.parent)}
    return subprocess.run([*COLDLABEL, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


@pytest.mark.slow  # `coldlabel` subprocesses (each imports torch and the LLM client)
def test_start_runs_inline_without_a_broker_and_records_the_run(setup, fake, tmp_path):
    done = cli(setup["cfg"], "label", "start", "--dataset", "tiny", "--users", "8", "--name", "first")
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = done.stdout.split("run ", 1)[1].split()[0]
    assert "8 labeled" in done.stdout
    store = setup["store"]
    run = store.get_run(run_id)
    manifest = setup["root"] / "tiny" / "processed" / "manifest.json"
    assert run.dataset_fingerprint == hashlib.sha256(manifest.read_bytes()).hexdigest()[:16]
    from labeler.prompts import version_tag

    assert run.prompt_version == version_tag("v1") and run.model == "model-fake" and run.name == "first"
    assert run.config["labeler"]["top_k_subcategories"] == 2 and run.config["endpoint"]["model"] == "model-fake"
    assert "store" not in run.config  # a store URL may carry a password
    assert run.status == "done"
    seqs = json.loads((setup["root"] / "tiny" / "processed" / "sequences.json").read_text())
    first8 = sorted(int(u) for u, s in seqs.items() if s)[:8]
    assert store.users_by_status(run_id)["done"] == first8
    calls = fake.request_count
    assert calls == store.run_progress(run_id).totals.llm_calls > 0

    status = json.loads(cli(setup["cfg"], "label", "status", run_id, "--json").stdout)
    assert status["done"] == 8 and status["pending"] == status["failed"] == status["dead"] == 0
    assert status["fallback_rate"] == 0.0 and status["users_per_min"] > 0
    shown = cli(setup["cfg"], "label", "status", run_id)
    assert shown.returncode == 0 and "8/8 done" in shown.stdout

    out = tmp_path / "export"
    assert cli(setup["cfg"], "label", "export", run_id, "--out", str(out)).returncode == 0
    with open(out / "edges.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    stored = list(store.export_edges(run_id))
    assert len(rows) == len(stored) > 0
    assert {(int(r["user_idx"]), r["item"], int(r["item_idx"]), float(r["weight"]), r["from_fallback"]) for r in rows} \
        == {(e.user_idx, e.item_id, e.item_idx, round(e.weight, 6), str(int(e.from_fallback))) for e in stored}
    with open(out / "triplets.tsv", newline="") as fh:
        trips = list(csv.DictReader(fh, delimiter="\t"))
    assert len(trips) == len(list(store.export_triplets(run_id)))
    assert set(trips[0]) >= {"user", "pos_item", "pos_idx", "neg_item", "neg_idx", "weight", "from_fallback"}
    assert json.loads((out / "run.json").read_text())["id"] == run_id

    again = cli(setup["cfg"], "label", "resume", run_id)  # a finished run: nothing to do, no request
    assert again.returncode == 0 and "nothing to label" in again.stdout
    assert fake.request_count == calls


def test_cancelled_run_makes_no_calls_and_resume_finishes_it(setup, fake):
    from labeler.lifecycle import process_user
    from labeler.runs import cancel_run, prepare_resume, start_run
    from workers.inline import run_inline

    settings, store = setup["settings"], setup["store"]
    run = start_run(store, settings, "tiny", users=5)
    cancel_run(store, run.id)
    outcome = process_user(settings, run.id, 0, worker="t", takeover=True, final_attempt=True)
    assert outcome.status == "skipped" and fake.request_count == 0
    assert store.get_user(run.id, 0).status == "pending"
    enq = prepare_resume(store, settings, run.id)
    assert store.get_run(run.id).status == "active" and len(enq.users) == 5
    result = run_inline(settings, run.id, enq.users)
    assert result.done == 5 and store.get_run(run.id).status == "done"


@pytest.mark.slow  # `coldlabel` subprocesses (each imports torch and the LLM client)
def test_unreachable_endpoint_loses_nothing_and_resume_on_another_endpoint_finishes(setup, fake):
    cfg, store = setup["cfg"], setup["store"]
    done = cli(cfg, "label", "start", "--dataset", "tiny", "--users", "4", "--endpoint", "dead")
    assert done.returncode == 1
    run_id = done.stdout.split("run ", 1)[1].split()[0]
    assert "unreachable" in done.stdout and setup["dead_url"] in done.stdout
    by_status = store.users_by_status(run_id)
    assert len(by_status["dead"]) == 4
    for u in by_status["dead"]:
        user = store.get_user(run_id, u)
        assert user.attempts == 2 and "unreachable" in user.last_error  # 1 try + max_task_retries=1
    assert list(store.export_edges(run_id)) == []
    status = cli(cfg, "label", "status", run_id)
    assert "dead" in status.stdout and "unreachable" in status.stdout

    resumed = cli(cfg, "label", "resume", run_id, "--endpoint", "other")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "4 users to finish on endpoint other" in resumed.stdout
    run = store.get_run(run_id)
    assert run.status == "done" and run.endpoint == "other" and run.model == "model-other"
    assert [(s["from_endpoint"], s["endpoint"]) for s in run.endpoint_switches] == [("dead", "other")]
    assert fake.request_count == 0 and setup["other"].request_count > 0
    assert len(store.users_by_status(run_id)["done"]) == 4 and list(store.export_edges(run_id))


@pytest.mark.slow  # `coldlabel` subprocesses (each imports torch and the LLM client)
def test_bad_input_gives_clear_errors(setup):
    cfg = setup["cfg"]
    unknown = cli(cfg, "label", "status", "nosuchrun")
    assert unknown.returncode == 1 and "no run 'nosuchrun'" in unknown.stderr
    zero = cli(cfg, "label", "start", "--dataset", "tiny", "--users", "0")
    assert zero.returncode == 2 and "--users must be a positive number" in zero.stderr
    missing = cli(cfg, "label", "start", "--dataset", "nothere", "--users", "2")
    assert missing.returncode == 1 and "coldlabel data prepare --dataset nothere" in missing.stderr
    endpoint = cli(cfg, "label", "start", "--dataset", "tiny", "--endpoint", "nope")
    assert endpoint.returncode == 2 and "unknown endpoint 'nope'" in endpoint.stderr
    assert setup["store"].list_runs() == []  # nothing half-created


def test_run_settings_use_the_runs_labeler_config_and_this_hosts_endpoints(setup):
    from coldlabel.config import load_settings
    from labeler.lifecycle import run_settings
    from labeler.runs import start_run

    run = start_run(setup["store"], setup["settings"], "tiny", users=1, endpoint="other")
    worker = load_settings(setup["cfg"], environ={"COLDLABEL_LABELER__TOP_K_SUBCATEGORIES": "7",
                                                  "COLDLABEL_ENDPOINTS__OTHER__BASE_URL": "http://host:1/v1"})
    eff = run_settings(worker, run)
    assert eff.labeler.top_k_subcategories == 2  # the run's
    assert eff.labeler.endpoint == "other" and eff.endpoint().base_url == "http://host:1/v1"  # this host's


def test_local_limiter_holds_across_threads_and_loops_and_survives_cancellation():
    from workers.limits import LocalLimiter

    limiter = LocalLimiter(3)
    lock = threading.Lock()
    now, peak = [0], [0]

    async def one() -> None:
        async with limiter.slot():
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            await asyncio.sleep(0.01)
            with lock:
                now[0] -= 1

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(8)))

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert peak[0] == 3 and limiter.held == 0

    async def cancelled_waiters() -> None:
        # Waiters that give up (timeouts, cancelled tasks) must not leak slots.
        async with limiter.slot(), limiter.slot(), limiter.slot():
            waiters = [asyncio.ensure_future(limiter.acquire()) for _ in range(4)]
            await asyncio.sleep(0.01)
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(3))), 1)

    asyncio.run(cancelled_waiters())
    assert limiter.held == 3
