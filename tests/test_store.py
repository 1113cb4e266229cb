"""The SQL store on SQLite and PostgreSQL (both real): every method, idempotency, concurrency, secrets."""
from __future__ import annotations

import hashlib
import inspect
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from coldlabel.store import (
    Edge,
    RunNotFound,
    Store,
    StoreError,
    Triplet,
    UserCounters,
)
from coldlabel.store.schema import edges, llm_calls, run_users, stage_results, triplets


def key_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


BODY = {"model": "smollm2",
        "messages": [{"role": "system", "content": "rank"}, {"role": "user", "content": "items 1 2 3"}],
        "response_format": {"type": "json_object", "schema": {"type": "object"}},
        "temperature": 0.0, "max_tokens": 64}
CALL = dict(model="smollm2", dialect="llamacpp", prompt_version="v1", endpoint="local", request=BODY)


def count(store: Store, table: sa.Table, *where) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()


def new_run(store: Store, users: int = 3, **kw):
    run = store.create_run(dataset="beauty", endpoint="local", model="smollm2", prompt_version="v1",
                           config={"top_k": 8}, **kw)
    store.add_users(run.id, [(i, f"U{i}") for i in range(users)])
    return run


# ---- LLM call cache -------------------------------------------------------------------------------

def test_put_and_get_call(store):
    key = key_of("a")
    assert store.get_call(key) is None
    assert store.put_call(key, **CALL, response_text='{"ids": [1]}', finish_reason="stop", prompt_tokens=12,
                          completion_tokens=5, latency_ms=33.5) is True
    got = store.get_call(key)
    assert got.response_text == '{"ids": [1]}' and got.finish_reason == "stop"
    assert (got.prompt_tokens, got.completion_tokens, got.latency_ms) == (12, 5, 33.5)
    assert got.request == BODY
    assert (got.model, got.dialect, got.prompt_version, got.endpoint) == ("smollm2", "llamacpp", "v1", "local")
    assert got.created_at.tzinfo is not None


def test_get_calls_finds_many_keys_in_one_query_and_a_stage_stores_its_calls_with_it(store):
    """get_calls returns the cached rows of the keys there are; save_stage(calls=...) stores the cache rows
    in the stage's transaction, with put_call's rules (a key already there is kept unless replace)."""
    assert store.get_calls([]) == {}
    store.put_call(key_of("a"), **CALL, response_text="A")
    run = new_run(store, users=1)
    store.save_stage(run.id, 0, "profile", {"values": []}, call_keys=[key_of("a"), key_of("b")],
                     calls=[dict(key=key_of("a"), **CALL, response_text="A2"),
                            dict(key=key_of("b"), **CALL, response_text="B", prompt_tokens=3)])
    got = store.get_calls([key_of("a"), key_of("b"), key_of("c"), key_of("a")])
    assert sorted(got) == sorted([key_of("a"), key_of("b")])
    assert got[key_of("a")].response_text == "A" and got[key_of("b")].prompt_tokens == 3
    assert store.load_stages(run.id, 0)[("profile", "")].call_keys == [key_of("a"), key_of("b")]
    store.save_stage(run.id, 0, "profile", {"values": []}, calls=[dict(key=key_of("a"), **CALL, response_text="A3",
                                                                       replace=True)])
    assert store.get_call(key_of("a")).response_text == "A3"
    with pytest.raises(ValueError, match="credentials"):
        store.save_stage(run.id, 0, "profile", {"values": []},
                         calls=[dict(key=key_of("d"), **{**CALL, "request": {"api_key": "x"}}, response_text="D")])
    assert store.get_call(key_of("d")) is None


def test_put_call_twice_keeps_first_answer_and_one_row(store):
    key = key_of("b")
    assert store.put_call(key, **CALL, response_text="first") is True
    assert store.put_call(key, **CALL, response_text="second") is False
    assert store.get_call(key).response_text == "first"
    assert count(store, llm_calls) == 1


def test_put_call_rejects_malformed_key(store):
    with pytest.raises(ValueError, match="64 lowercase hex"):
        store.put_call("not-a-hash", **CALL, response_text="x")
    assert count(store, llm_calls) == 0


def test_api_key_never_stored(store, monkeypatch):
    secret = "sk-test-DO-NOT-STORE-1234567890"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    assert not {"api_key", "key_env", "headers", "credentials"} & set(inspect.signature(Store.put_call).parameters)
    store.put_call(key_of("c"), **CALL, response_text="ok")
    for bad in ({**BODY, "api_key": secret}, {**BODY, "extra_headers": {"Authorization": f"Bearer {secret}"}}):
        with pytest.raises(ValueError, match="credentials"):
            store.put_call(key_of(str(bad)), **{**CALL, "request": bad}, response_text="ok")
    with store.engine.connect() as conn:
        raw = conn.execute(sa.select(sa.cast(llm_calls.c.request, sa.Text), llm_calls.c.response_text)).all()
    assert len(raw) == 1 and all(secret not in field for row in raw for field in row)


def test_schema_properties_named_like_headers_are_fine(store):
    body = {**BODY, "response_format": {"type": "json_object",
                                        "schema": {"properties": {"headers": {"type": "string"}}}}}
    assert store.put_call(key_of("schema"), **{**CALL, "request": body}, response_text="{}")
    assert store.get_call(key_of("schema")).request == body


def test_concurrent_put_same_key_from_8_threads(store):
    key = key_of("race")
    barrier = threading.Barrier(8)

    def put(i: int) -> bool:
        barrier.wait()
        return store.put_call(key, **CALL, response_text=f"answer {i}")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(put, range(8)))
    assert results.count(True) == 1
    assert count(store, llm_calls) == 1


def _process_writer(url: str, start, proc: int, n: int) -> None:
    """Runs in a child process: opens the store (maybe racing the other process to create the schema)
    and writes shared keys plus its own keys."""
    start.wait()
    with Store(url) as store:
        for i in range(n):
            store.put_call(key_of(f"shared {i}"), **CALL, response_text=f"p{proc}")
            store.put_call(key_of(f"own {proc} {i}"), **CALL, response_text=f"p{proc}")


def test_concurrent_put_from_two_processes_sqlite(sqlite_url):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_process_writer, args=(sqlite_url, start, p, 40)) for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Store(sqlite_url) as store:
        assert count(store, llm_calls) == 40 + 2 * 40
        assert store.get_call(key_of("shared 7")).response_text in {"p0", "p1"}


# ---- runs ---------------------------------------------------------------------------------------

def test_run_lifecycle(store):
    run = store.create_run(dataset="beauty", endpoint="local", model="smollm2", prompt_version="v1",
                           config={"labeler": {"top_k": 8}}, name="first", dataset_fingerprint="abc")
    assert run.status == "active" and run.config == {"labeler": {"top_k": 8}} and run.endpoint_switches == []
    assert store.get_run(run.id) == run
    other = store.create_run(dataset="health", endpoint="vllm", model="qwen", prompt_version="v1", config={},
                             run_id="fixed-id")
    assert {r.id for r in store.list_runs()} == {run.id, "fixed-id"}
    assert [r.id for r in store.list_runs(dataset="health")] == ["fixed-id"]
    store.set_run_status(other.id, "cancelled")
    assert [r.id for r in store.list_runs(status="cancelled")] == ["fixed-id"]
    assert store.get_run(other.id).updated_at >= other.updated_at

    switched = store.record_endpoint_switch(run.id, "vllm", "qwen", reason="local server down")
    store.record_endpoint_switch(run.id, "openai", "gpt-4o-mini")
    final = store.get_run(run.id)
    assert (switched.endpoint, final.endpoint, final.model) == ("vllm", "openai", "gpt-4o-mini")
    assert [(s["from_endpoint"], s["endpoint"]) for s in final.endpoint_switches] == [("local", "vllm"),
                                                                                        ("vllm", "openai")]
    assert final.endpoint_switches[0]["reason"] == "local server down"


def test_run_errors_name_the_problem(store):
    store.create_run(dataset="d", endpoint="e", model="m", prompt_version="v1", config={}, run_id="r1")
    with pytest.raises(StoreError, match="already exists"):
        store.create_run(dataset="d", endpoint="e", model="m", prompt_version="v1", config={}, run_id="r1")
    with pytest.raises(RunNotFound, match="nope"):
        store.get_run("nope")
    with pytest.raises(RunNotFound):
        store.set_run_status("nope", "done")
    with pytest.raises(ValueError, match="sleeping"):
        store.set_run_status("r1", "sleeping")
    with pytest.raises(ValueError, match="run id"):
        store.create_run(dataset="d", endpoint="e", model="m", prompt_version="v1", config={}, run_id="a b")
    with pytest.raises(ValueError, match="config is not JSON"):
        store.create_run(dataset="d", endpoint="e", model="m", prompt_version="v1", config={"x": object()})


def test_delete_run_cascades(store):
    run = new_run(store)
    store.save_stage(run.id, 0, "profile", {"p": 1})
    store.save_labels(run.id, 0, [Edge(1, "i1", 1.0)], [Triplet(1, 2, "i1", "i2", 1.0)])
    store.delete_run(run.id)
    assert [count(store, t) for t in (run_users, stage_results, edges, triplets)] == [0, 0, 0, 0]


# ---- users --------------------------------------------------------------------------------------

def test_add_users_is_idempotent_and_refuses_changed_ids(store):
    run = new_run(store, users=0)
    assert store.add_users(run.id, [(0, "A"), (1, "B")]) == 2
    assert store.add_users(run.id, [(0, "A"), (1, "B"), (2, "C")]) == 1
    assert count(store, run_users) == 3
    with pytest.raises(StoreError, match="user_idx 1 is 'B'"):
        store.add_users(run.id, [(1, "Z")])
    with pytest.raises(ValueError, match="given twice"):
        store.add_users(run.id, [(5, "X"), (5, "Y")])
    with pytest.raises(RunNotFound):
        store.add_users("nope", [(0, "A")])
    assert store.get_user(run.id, 2).status == "pending"


def test_claim_semantics(store):
    run = new_run(store, users=4)
    assert store.claim_user(run.id, 0, "w1", lease_s=60) is True
    user = store.get_user(run.id, 0)
    assert (user.status, user.attempts, user.worker) == ("running", 1, "w1")
    assert 59 < (user.lease_expires_at - user.started_at).total_seconds() <= 61
    # in flight under a live lease: nobody else takes it
    assert store.claim_user(run.id, 0, "w2", lease_s=60) is False
    # the same worker again (it waited out a store outage): the same attempt, not a new one
    assert store.claim_user(run.id, 0, "w1", lease_s=60) is True
    assert store.get_user(run.id, 0).attempts == 1 and store.get_user(run.id, 0).started_at == user.started_at
    # its worker died and the lease ran out: taken over, the attempt counted
    assert store.claim_user(run.id, 0, "w1", lease_s=-1) is True  # (a lease that is already over)
    assert store.claim_user(run.id, 0, "w2", lease_s=60) is True
    assert (store.get_user(run.id, 0).attempts, store.get_user(run.id, 0).worker) == (2, "w2")
    # a foreground command may take over a live lease on purpose
    assert store.claim_user(run.id, 0, "cli", lease_s=60, takeover=True) is True

    store.finish_user(run.id, 0, UserCounters(llm_calls=4))
    assert store.get_user(run.id, 0).lease_expires_at is None
    assert store.claim_user(run.id, 0, "w3", lease_s=60) is False  # done is done

    assert store.claim_user(run.id, 1, "w1", lease_s=60)
    assert store.fail_user(run.id, 1, "timeout") is True
    assert store.get_user(run.id, 1).last_error == "timeout"
    assert store.claim_user(run.id, 1, "w1", lease_s=60) is True  # failed may be retried
    store.fail_user(run.id, 1, "gave up", dead=True)
    assert store.claim_user(run.id, 1, "w1", lease_s=60) is False  # dead-lettered

    for status in ("cancelled", "paused"):
        store.set_run_status(run.id, status)
        assert store.claim_user(run.id, 2, "w1", lease_s=60) is False  # inactive runs hand out nothing
        assert store.get_user(run.id, 2).status == "pending"
    with pytest.raises(StoreError, match="no user_idx 99"):
        store.claim_user(run.id, 99, "w1", lease_s=60)


def test_expired_claims_are_reaped_once_and_renewed_ones_are_not(store):
    """Finding 3: a dead worker's claim comes back (pending) as soon as its lease is over; a live worker's
    renewed claim is left alone; each expired claim is handed to one reaper only."""
    run = new_run(store, users=4)
    store.claim_user(run.id, 0, "alive", lease_s=-1)        # expired, but its worker is alive and renews it
    assert store.renew_claims([(run.id, 0, "alive")], lease_s=60) == []
    store.claim_user(run.id, 1, "dead", lease_s=-1)         # expired: its worker was killed
    store.claim_user(run.id, 2, "w", lease_s=60)
    store.fail_user(run.id, 2, "timeout", retry_within_s=-1)  # a retry was due but never came
    assert store.reap_expired_claims() == [(run.id, 1), (run.id, 2)]
    assert store.reap_expired_claims() == []                 # reaped once
    reaped = store.get_user(run.id, 1)
    assert reaped.status == "pending" and "claim expired" in reaped.last_error and reaped.lease_expires_at is None
    assert store.get_user(run.id, 2).status == "failed" and store.get_user(run.id, 2).last_error == "timeout"
    assert store.claim_user(run.id, 1, "survivor", lease_s=60)
    assert store.renew_claims([(run.id, 1, "dead"), (run.id, 1, "survivor")], 60) == [(run.id, 1, "dead")]
    store.claim_user(run.id, 3, "w", lease_s=60)             # finished before its keeper let go: not lost
    store.finish_user(run.id, 3)
    assert store.renew_claims([(run.id, 3, "w")], 60) == []

    other = new_run(store, users=2)                          # a paused run's claims wait for `label resume`
    store.claim_user(other.id, 0, "dead", lease_s=-1)
    store.set_run_status(other.id, "paused")
    assert store.reap_expired_claims() == [] and store.reap_expired_claims(run_id=other.id) == []


def test_progress_counts_expired_claims_as_stalled_not_in_flight(store):
    """Finding 3: `label status` said "in flight 3" for users whose worker was long dead."""
    run = new_run(store, users=4)
    store.claim_user(run.id, 0, "w", lease_s=60)
    store.finish_user(run.id, 0)
    store.claim_user(run.id, 1, "killed", lease_s=-1)
    store.claim_user(run.id, 2, "killed", lease_s=-1)
    store.claim_user(run.id, 3, "alive", lease_s=60)
    progress = store.run_progress(run.id)
    assert progress.by_status["running"] == 1 and progress.stalled == 2
    assert progress.total == 4 and progress.remaining == 3


def test_circuit_breaker_count_and_run_end(store):
    run = new_run(store, users=2)
    assert not store.note_transport_failure(run.id, 3, "why")
    assert not store.note_transport_failure(run.id, 3, "why")
    store.claim_user(run.id, 0, "w", lease_s=60)
    store.finish_user(run.id, 0)  # a user got through: the count starts again
    assert not store.note_transport_failure(run.id, 3, "why")
    assert not store.note_transport_failure(run.id, 3, "why")
    assert store.note_transport_failure(run.id, 3, "endpoint down") is True
    paused = store.get_run(run.id)
    assert (paused.status, paused.status_reason) == ("paused", "endpoint down")
    assert store.note_transport_failure(run.id, 3, "again") is False  # already paused: paused once
    assert store.end_run(run.id, "done") is False  # only an active run ends
    store.set_run_status(run.id, "active")
    assert store.get_run(run.id).status_reason is None
    assert not store.note_transport_failure(run.id, 3, "why")  # resumed: counting from zero
    assert store.end_run(run.id, "degraded", "too many fallbacks") is True
    assert store.get_run(run.id).status_reason == "too many fallbacks"


def test_only_one_of_8_threads_claims(store):
    run = new_run(store, users=1)
    barrier = threading.Barrier(8)

    def claim(i: int) -> bool:
        barrier.wait()
        return store.claim_user(run.id, 0, f"w{i}", lease_s=3600)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, range(8)))
    assert results.count(True) == 1
    assert store.get_user(run.id, 0).attempts == 1


def test_fail_does_not_undo_done(store):
    run = new_run(store, users=1)
    store.claim_user(run.id, 0, "w1", lease_s=60)
    store.finish_user(run.id, 0)
    assert store.fail_user(run.id, 0, "late duplicate failed") is False
    assert store.get_user(run.id, 0).status == "done"


def test_status_views_and_progress(store):
    run = new_run(store, users=6)
    for idx in (0, 1, 2):
        store.claim_user(run.id, idx, "w", lease_s=60)
    store.finish_user(run.id, 0, UserCounters(llm_calls=5, cache_hits=1, prompt_tokens=100,
                                              completion_tokens=20, fallbacks=1, invalid_ids=2, latency_ms=50.0))
    store.finish_user(run.id, 1, {"llm_calls": 3, "prompt_tokens": 60, "completion_tokens": 10,
                                  "latency_ms": 25.0})
    store.fail_user(run.id, 2, "boom", dead=True)
    store.claim_user(run.id, 3, "w", lease_s=60)
    store.fail_user(run.id, 3, "timeout")

    assert store.users_by_status(run.id) == {"pending": [4, 5], "running": [], "done": [0, 1],
                                             "failed": [3], "dead": [2]}
    assert store.incomplete_users(run.id) == [3, 4, 5]
    assert store.incomplete_users(run.id, include_dead=True) == [2, 3, 4, 5]

    later = store.get_user(run.id, 1).finished_at + timedelta(minutes=10)
    progress = store.run_progress(run.id, now=later)
    assert progress.total == 6 and progress.done == 2 and progress.remaining == 3
    assert progress.by_status == {"pending": 2, "running": 0, "done": 2, "failed": 1, "dead": 1}
    assert progress.totals == UserCounters(llm_calls=8, cache_hits=1, prompt_tokens=160, completion_tokens=30,
                                           fallbacks=1, invalid_ids=2, latency_ms=75.0)
    assert progress.first_started_at <= progress.last_finished_at
    # users remain, so the pace is measured up to now: a run that stopped moving slows down, its ETA grows
    span_min = (later - progress.first_started_at).total_seconds() / 60
    assert progress.users_per_min == pytest.approx(2 / span_min)
    assert progress.eta_s == pytest.approx(3 / progress.users_per_min * 60) and progress.eta_s > 3 * 5 * 60

    with pytest.raises(ValueError, match="unknown user counter"):
        store.finish_user(run.id, 4, {"tokens": 1})


def test_progress_of_empty_run(store):
    run = new_run(store, users=0)
    progress = store.run_progress(run.id)
    assert (progress.total, progress.users_per_min, progress.eta_s) == (0, None, None)
    assert progress.totals == UserCounters()


# ---- stages and labels --------------------------------------------------------------------------

def test_save_stage_upserts_and_loads(store):
    run = new_run(store, users=2)
    store.save_stage(run.id, 0, "profile", {"text": "likes serums"}, parser_version="p1",
                     call_keys=[key_of("x")])
    store.save_stage(run.id, 0, "items", {"ids": [3, 4]}, part="Beauty > Skin Care > Face", used_fallback=True,
                     invalid_count=2)
    store.save_stage(run.id, 0, "items", {"ids": [9]}, part="Beauty > Hair")
    store.save_stage(run.id, 0, "profile", {"text": "likes serums v2"}, parser_version="p2")  # re-entered
    stages = store.load_stages(run.id, 0)
    assert set(stages) == {("profile", ""), ("items", "Beauty > Skin Care > Face"), ("items", "Beauty > Hair")}
    assert stages[("profile", "")].output == {"text": "likes serums v2"}
    assert stages[("profile", "")].parser_version == "p2" and stages[("profile", "")].call_keys == []
    face = stages[("items", "Beauty > Skin Care > Face")]
    assert (face.output, face.used_fallback, face.invalid_count) == ({"ids": [3, 4]}, True, 2)
    assert count(store, stage_results) == 3
    assert store.load_stages(run.id, 1) == {}
    store.save_stage(run.id, 1, "items", {"ids": [1]}, part="x", used_fallback=True, invalid_count=1)
    assert store.stage_summary(run.id) == {
        "profile": {"answers": 1, "fallbacks": 0, "invalid_ids": 0},
        "items": {"answers": 3, "fallbacks": 2, "invalid_ids": 3}}


def test_save_stage_rejects_bad_input(store):
    run = new_run(store, users=1)
    with pytest.raises(ValueError, match="stage 'ranking'"):
        store.save_stage(run.id, 0, "ranking", {})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        store.save_stage(run.id, 0, "profile", {"x": {1, 2}})
    with pytest.raises(sa.exc.IntegrityError):  # the user must exist (foreign key, also on SQLite)
        store.save_stage(run.id, 42, "profile", {})
    assert count(store, stage_results) == 0


def test_save_labels_replaces_and_is_idempotent(store):
    run = new_run(store, users=2)
    first = [Edge(10, "i10", 1.0, 5.0, "A"), Edge(11, "i11", 0.1, None, "", from_fallback=True)]
    trips = [Triplet(10, 12, "i10", "i12", 1.0)]
    store.save_labels(run.id, 0, first, trips)
    store.save_labels(run.id, 0, first, trips)  # a retried task saves again
    assert count(store, edges) == 2 and count(store, triplets) == 1
    store.save_labels(run.id, 1, [{"item_idx": 3, "item_id": "i3", "weight": 0.5}], [])
    store.save_labels(run.id, 0, [Edge(12, "i12", 0.7)], [])  # a later attempt found fewer
    assert [(e.user_idx, e.user_id, e.item_idx, e.weight) for e in store.export_edges(run.id)] == [
        (0, "U0", 12, 0.7), (1, "U1", 3, 0.5)]
    assert list(store.export_triplets(run.id)) == []


def test_export_streams_everything_in_order(store):
    run = new_run(store, users=3)
    for user in (2, 0, 1):
        store.save_labels(run.id, user, [Edge(i, f"i{i}", 1.0 / (i + 1)) for i in (5, 1, 3)],
                          [Triplet(1, 5, "i1", "i5", 1.0, from_fallback=True)])
    exported = list(store.export_edges(run.id, batch_size=2))
    assert [(e.user_idx, e.item_idx) for e in exported] == [(u, i) for u in (0, 1, 2) for i in (1, 3, 5)]
    assert exported[0].weight == pytest.approx(0.5)
    trips = list(store.export_triplets(run.id))
    assert [(t.user_idx, t.pos_id, t.neg_id, t.from_fallback) for t in trips] == [
        (u, "i1", "i5", True) for u in (0, 1, 2)]
    other = new_run(store, users=1)
    assert list(store.export_edges(other.id)) == []


def test_save_labels_bad_input_loses_nothing(store):
    run = new_run(store, users=1)
    store.save_labels(run.id, 0, [Edge(1, "i1", 1.0)], [])
    with pytest.raises(ValueError, match=r"duplicate edge item_idx \[2\]"):
        store.save_labels(run.id, 0, [Edge(2, "i2", 1.0), Edge(2, "i2", 0.5)], [])
    with pytest.raises(ValueError, match="bad Edge"):
        store.save_labels(run.id, 0, [{"item": 3}], [])
    with pytest.raises(StoreError, match="no user_idx 7"):
        store.save_labels(run.id, 7, [Edge(1, "i1", 1.0)], [])
    assert [e.item_idx for e in store.export_edges(run.id)] == [1]


def test_concurrent_save_labels_same_user(store):
    """Duplicate deliveries of one user saving at once leave exactly one copy of the labels."""
    run = new_run(store, users=1)
    labels = [Edge(i, f"i{i}", 1.0) for i in range(20)]
    barrier = threading.Barrier(4)

    def save(_: int) -> None:
        barrier.wait()
        store.save_labels(run.id, 0, labels, [Triplet(0, 1, "i0", "i1", 1.0)])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(save, range(4)))
    assert count(store, edges) == 20 and count(store, triplets) == 1


# ---- the database going away ------------------------------------------------------------------------

@pytest.mark.services
def test_a_cut_database_raises_store_unavailable_and_the_store_heals(postgres_url):
    """Finding 1, at the store boundary: a database that is down is StoreUnavailable (transient, wait for
    it), never a raw driver error that callers would take for a bug; the same Store works once it is back."""
    from coldlabel.store import StoreUnavailable, upgrade
    from tests.support.services import PG_HOST, PG_PORT
    from tests.support.tcp_proxy import TcpProxy

    upgrade(postgres_url)
    with TcpProxy(PG_HOST, PG_PORT) as proxy:
        url = postgres_url.replace(f"{PG_HOST}:{PG_PORT}", f"127.0.0.1:{proxy.port}")
        store = Store(url)
        run = new_run(store, users=2)
        proxy.cut()
        for call in (lambda: store.get_run(run.id), lambda: store.claim_user(run.id, 0, "w", lease_s=60),
                     lambda: store.save_stage(run.id, 0, "profile", {}), lambda: list(store.export_edges(run.id)),
                     lambda: Store(url)):
            with pytest.raises(StoreUnavailable, match="unreachable|cannot be reached"):
                call()
        proxy.restore()
        assert store.claim_user(run.id, 0, "w", lease_s=60) and store.get_user(run.id, 0).status == "running"
        store.close()
