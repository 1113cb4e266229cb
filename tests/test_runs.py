"""Run lifecycle without a broker (the embedded default): `label start` runs inline on SQLite, status,
export, cancel, resume, endpoint switch, clear errors on bad input; and the in-process endpoint limiter.

The LLM is the scripted fake server over HTTP; the pipeline is the real one on the tiny synthetic dataset.
"""
from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from coldlabel.config import load_settings
from coldlabel_testing.fake_server import FakeLLMServer, Reply
from tests.support.cli import COLDLABEL, build_tiny_from, write_config
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parent.parent
RUN_SETTINGS = {"retrieval": {"tt_epochs": 2}, "transport": {"max_attempts": 1},
                "workers": {"broker_url": "", "max_task_retries": 1, "retry_backoff_s": 0, "inline_concurrency": 3}}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_tiny_from(write_config(root / "build.toml", RUN_SETTINGS, {"data": {"root": str(root)}}))
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
    endpoints = {f"endpoints.{name}": {"base_url": url, "model": model, "dialect": "vllm", "concurrency": 2}
                 for name, url, model in (("fake", fake.base_url, "model-fake"),
                                          ("other", other.base_url, "model-other"), ("dead", dead_url, "model-dead"))}
    cfg = write_config(tmp_path / "cfg.toml", RUN_SETTINGS, {"data": {"root": str(data_root)},
                                                             "store": {"url": f"sqlite:///{tmp_path / 'store.db'}"}},
                       endpoints)
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
    outcome = process_user(settings, run.id, 0, worker="t", final_attempt=True)
    assert outcome.status == "skipped" and fake.request_count == 0
    assert store.get_user(run.id, 0).status == "pending"
    enq = prepare_resume(store, settings, run.id)
    assert store.get_run(run.id).status == "active" and len(enq.users) == 5
    result = run_inline(settings, run.id, enq.users)
    assert result.done == 5 and store.get_run(run.id).status == "done"


@pytest.mark.slow  # `coldlabel` subprocesses (each imports torch and the LLM client)
def test_unreachable_endpoint_trips_the_circuit_breaker_and_resume_on_another_endpoint_finishes(setup, fake):
    """Finding 6: a refused URL used to cost every user its whole retry budget (~64 s each) and dead-letter
    them all. Now `transport.circuit_breaker_failures` (default 5) users in a row failing on transport errors
    pause the run with one message; the users stay claimable and `label resume --endpoint` finishes them."""
    cfg, store = setup["cfg"], setup["store"]
    done = cli(cfg, "label", "start", "--dataset", "tiny", "--users", "8", "--endpoint", "dead")
    assert done.returncode == 1
    run_id = done.stdout.split("run ", 1)[1].split()[0]
    run = store.get_run(run_id)
    assert run.status == "paused" and "circuit breaker" in run.status_reason
    assert "unreachable" in run.status_reason and setup["dead_url"] in run.status_reason
    assert f"run {run_id} paused: paused by the circuit breaker" in done.stderr
    by_status = store.users_by_status(run_id)
    assert len(by_status["dead"]) <= 2 and not by_status["running"]  # not every user burned (8 on main)
    attempts = sum(store.get_user(run_id, u).attempts for u in store.incomplete_users(run_id, include_dead=True))
    assert attempts <= 5 + 3  # the breaker's count, plus what the other threads had in flight
    assert list(store.export_edges(run_id)) == []
    status = cli(cfg, "label", "status", run_id)
    assert "paused" in status.stdout and "circuit breaker" in status.stdout

    resumed = cli(cfg, "label", "resume", run_id, "--endpoint", "other")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "8 users to finish on endpoint other" in resumed.stdout
    run = store.get_run(run_id)
    assert run.status == "done" and run.endpoint == "other" and run.model == "model-other"
    assert run.status_reason is None
    assert [(s["from_endpoint"], s["endpoint"]) for s in run.endpoint_switches] == [("dead", "other")]
    assert fake.request_count == 0 and setup["other"].request_count > 0
    assert len(store.users_by_status(run_id)["done"]) == 8 and list(store.export_edges(run_id))


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


@pytest.mark.slow  # `coldlabel` subprocesses
def test_start_refuses_a_dataset_without_retrieval_artefacts(setup, tmp_path):
    """Finding 5: a prepared dataset whose retrieval was never built used to get a run whose every user was
    dead-lettered; now `label start` refuses before creating anything and says what to run."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(setup["root"] / "tiny", root / "tiny")
    shutil.rmtree(root / "tiny" / "retrieval")
    cfg = tmp_path / "unbuilt.toml"
    cfg.write_text(setup["cfg"].read_text().replace(f'root = "{setup["root"]}"', f'root = "{root}"'))
    done = cli(cfg, "label", "start", "--dataset", "tiny", "--users", "2")
    assert done.returncode == 1 and "coldlabel retrieval build --dataset tiny" in done.stderr
    assert setup["store"].list_runs() == []


def config_with(setup, tmp_path, name: str, url: str, model: str = "model-fake", extra: str = "") -> Path:
    """The test's config plus one more endpoint ``name`` (the other settings, store and data root the same)."""
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(setup["cfg"].read_text() + f'[endpoints.{name}]\nbase_url = "{url}"\nmodel = "{model}"\n'
                   f'dialect = "vllm"\nconcurrency = 2\napi_key_env = "COLDLABEL_TEST_KEY"\n' + extra)
    return cfg


@pytest.mark.slow  # `coldlabel` subprocesses
def test_a_run_whose_answers_all_fall_back_ends_degraded_with_a_warning_and_exit_3(setup, tmp_path):
    """Finding 5: a run whose every stage fell back used to end "done", exit 0, no word said."""
    with FakeLLMServer(default="empty", model="model-fake") as empty:
        cfg = config_with(setup, tmp_path, "empty", empty.base_url)
        done = cli(cfg, "label", "start", "--dataset", "tiny", "--users", "3", "--endpoint", "empty")
        assert done.returncode == 3, done.stdout + done.stderr
        lenient = cli(cfg, "--set", "labeler.max_fallback_share=1.0", "label", "start", "--dataset", "tiny",
                      "--users", "1", "--endpoint", "empty")
    assert lenient.returncode == 0, lenient.stderr  # how much fallback is acceptable is the user's call
    run_id = done.stdout.split("run ", 1)[1].split()[0]
    run = setup["store"].get_run(run_id)
    assert run.status == "degraded" and "100% of stage answers fell back" in run.status_reason
    assert f"warning: run {run_id} ended degraded: 100% of stage answers fell back (above " \
           "labeler.max_fallback_share = 50%)" in done.stderr.replace("\n", " ")
    assert len(setup["store"].users_by_status(run_id)["done"]) == 3  # the weak labels are kept, and marked
    status = json.loads(cli(cfg, "label", "status", run_id, "--json").stdout)
    assert status["status"] == "degraded" and status["fallback_rate"] == 1.0 and status["warnings"]
    shown = cli(cfg, "label", "status", run_id).stdout
    assert "degraded:" in shown and "fell back" in shown


def test_an_inline_run_whose_users_all_died_ends_failed_not_active(setup, tmp_path):
    """Finding 5: an inline run whose users were all dead-lettered used to stay 'active' forever."""
    from labeler.runs import start_run
    from workers.inline import run_inline

    too_long = Reply("status", status=400, text="This model's maximum context length is 8 tokens.")
    with FakeLLMServer(default=too_long, model="model-fake") as srv:
        settings = load_settings(config_with(setup, tmp_path, "short", srv.base_url), environ={})
        store = setup["store"]
        run = start_run(store, settings, "tiny", users=4, endpoint="short")
        result = run_inline(settings, run.id, store.incomplete_users(run.id))
        assert srv.request_count == 4  # a prompt over the context length: this user only, not retried
    assert result.dead == 4
    ended = store.get_run(run.id)
    assert ended.status == "failed" and "all 4 users were dead-lettered" in ended.status_reason
    assert "prompt is too long" in store.get_user(run.id, 0).last_error


@pytest.mark.slow  # `coldlabel` subprocesses
def test_a_rejected_api_key_pauses_the_run_at_once_with_one_clear_message(setup, tmp_path):
    """Finding 6: a 401 used to be retried like a transient error (32 s per user), then every user died."""
    with FakeLLMServer(default=Reply("status", status=401, text="Incorrect API key provided"),
                       model="model-fake") as srv:
        cfg = config_with(setup, tmp_path, "keyed", srv.base_url)
        done = cli(cfg, "label", "start", "--dataset", "tiny", "--users", "8", "--endpoint", "keyed")
        sent = srv.request_count
    assert done.returncode == 1
    run_id = done.stdout.split("run ", 1)[1].split()[0]
    assert sent <= 3  # at most one per thread (workers.inline_concurrency = 3): no retries, no more users
    run = setup["store"].get_run(run_id)
    assert run.status == "paused"
    assert "rejected the request: HTTP 401" in run.status_reason
    assert "check the API key in $COLDLABEL_TEST_KEY" in run.status_reason
    assert f"coldlabel label resume {run_id}" in run.status_reason
    assert f"error: run {run_id} paused: endpoint 'keyed'" in done.stderr
    assert done.stderr.count("HTTP 401") <= 2  # the pause logged once and the command's verdict, not per user
    assert not setup["store"].users_by_status(run_id)["dead"]
    resumed = cli(cfg, "label", "resume", run_id, "--endpoint", "fake")
    assert resumed.returncode == 0 and setup["store"].get_run(run_id).status == "done"


def test_truncated_answers_are_not_replayed_by_a_later_run(setup, tmp_path):
    """Finding 4: truncated answers were cached; after switching to a healthy server a new run made 0
    requests and still fell back on 100 % of its stages."""
    from labeler.runs import run_status, start_run
    from workers.inline import run_inline

    store = setup["store"]
    with FakeLLMServer(default="truncated", model="model-fake") as bad:
        settings = load_settings(config_with(setup, tmp_path, "cut", bad.base_url), environ={})
        first = start_run(store, settings, "tiny", users=3, endpoint="cut")
        run_inline(settings, first.id, store.incomplete_users(first.id))
        assert bad.request_count > 0 and run_status(store, first.id).fallback_rate == 1.0
    with FakeLLMServer(model="model-fake") as good:  # same model: same cache keys
        settings = load_settings(config_with(setup, tmp_path, "healthy", good.base_url), environ={})
        second = start_run(store, settings, "tiny", users=3, endpoint="healthy")
        result = run_inline(settings, second.id, store.incomplete_users(second.id))
        assert result.done == 3 and good.request_count > 0
    status = run_status(store, second.id)
    assert status.fallback_rate == 0.0 and status.progress.totals.llm_calls == good.request_count
    assert store.get_run(second.id).status == "done"


def test_a_changed_dataset_is_refused_on_resume_and_by_workers(setup, tmp_path, fake):
    """Finding 2: the run stores its dataset's fingerprint; after re-preparing with changed inputs a resumed
    run used to write edges to users whose indices now mean other people."""
    import shutil

    from coldlabel.data import prepare, synth
    from coldlabel.data.workspace import Workspace
    from coldlabel.errors import DatasetChanged
    from labeler.lifecycle import process_user
    from labeler.runs import dataset_fingerprint, prepare_resume, start_run
    from workers.inline import run_inline

    root = tmp_path / "data"
    shutil.copytree(setup["root"] / "tiny", root / "tiny")
    cfg = tmp_path / "copy.toml"
    cfg.write_text(setup["cfg"].read_text().replace(f'root = "{setup["root"]}"', f'root = "{root}"'))
    settings, store = load_settings(cfg, environ={}), setup["store"]
    run = start_run(store, settings, "tiny", users=4)
    first_two = store.incomplete_users(run.id)[:2]
    run_inline(settings, run.id, first_two)
    before = run.dataset_fingerprint

    ws = Workspace.of(root, "tiny")
    synth.generate("tiny", ws.root, seed=1)  # new raw files: other reviews, other users behind the indices
    prepare.prepare(ws, settings.data)
    after = dataset_fingerprint(settings, "tiny")
    assert after != before
    with pytest.raises(DatasetChanged) as err:
        prepare_resume(store, settings, run.id)
    msg = str(err.value)
    assert before in msg and after in msg and "label start --dataset tiny" in msg and "data prepare" in msg
    assert store.get_run(run.id).status == "active"  # refused: nothing changed

    # A message already queued reaches a worker: it pauses the run instead of labeling the wrong person.
    calls = fake.request_count
    third = store.incomplete_users(run.id)[0]
    result = process_user(settings, run.id, third, worker="w", final_attempt=True)
    assert result.status == "paused" and fake.request_count == calls
    paused = store.get_run(run.id)
    assert paused.status == "paused" and before in paused.status_reason and after in paused.status_reason
    assert {e.user_idx for e in store.export_edges(run.id)} == set(first_two)
    assert store.get_user(run.id, third).status == "failed"  # claimable once the original data is back


def test_an_inline_run_takes_over_the_claims_of_a_dead_process_once_their_leases_expire(setup, fake):
    """Finding 3, inline: users left 'running' by a process that died (SIGKILL of an earlier `label start`)
    are neither labeled twice while their lease lives nor left behind: the run's reaper takes them back."""
    import time

    from labeler.runs import prepare_resume, start_run
    from workers.inline import run_inline

    settings = load_settings(setup["cfg"], ["workers.lease_s=2", "workers.reap_interval_s=0.5"], environ={})
    store = setup["store"]
    run = start_run(store, settings, "tiny", users=4)
    ghost = store.incomplete_users(run.id)[:2]
    for user_idx in ghost:  # claimed by a process that is gone; its leases run out in 2 s
        assert store.claim_user(run.id, user_idx, "ghost:1:label_0", lease_s=2)
    enq = prepare_resume(store, settings, run.id)
    assert enq.in_flight == ghost
    started = time.monotonic()
    result = run_inline(settings, run.id, enq.users)
    took = time.monotonic() - started
    assert store.users_by_status(run.id)["done"] == sorted(enq.users) and store.get_run(run.id).status == "done"
    for user_idx in ghost:
        user = store.get_user(run.id, user_idx)
        assert user.attempts == 2 and user.worker.startswith(f"inline@{socket.gethostname()}:")  # taken over, once
    assert result.done == 4 and took >= 1.5  # it waited for the leases: no double labeling meanwhile


def test_after_a_store_outage_the_reaper_gives_live_workers_time_to_renew(setup):
    """During an outage nobody can renew a lease, so every claim looks expired when the store is back; the
    reaper waits half a lease (while live workers renew) instead of re-enqueueing work that is in progress."""
    from coldlabel.errors import StoreUnavailable
    from labeler.runs import start_run
    from workers.reaper import Reaper

    store, settings = setup["store"], setup["settings"]
    run = start_run(store, settings, "tiny", users=2)
    alive, dead = store.incomplete_users(run.id)
    store.claim_user(run.id, alive, "alive", lease_s=-1)  # expired while the store was away
    down, now, sent = [True], [0.0], []

    def store_for():
        if down[0]:
            raise StoreUnavailable("database unreachable: the proxy is cut")
        return store

    reaper = Reaper(store_for, settings, dispatch=sent.extend, run_id=run.id, clock=lambda: now[0])
    assert reaper.tick() == []                              # the store is away
    down[0] = False
    assert reaper.tick() == [] and sent == []               # back: hold for lease_s / 2 = 15 s
    store.renew_claims([(run.id, alive, "alive")], 30)      # ... during which the live worker renews
    store.claim_user(run.id, dead, "killed", lease_s=-1)    # and this one's worker is really gone
    now[0] = 16.0
    assert reaper.tick() == [(run.id, dead)] and sent == [(run.id, dead)]
    assert store.get_user(run.id, alive).status == "running" and store.get_user(run.id, dead).status == "pending"


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
