"""The labelers that need no LLM (labeler/builtin.py) on the real `tiny` dataset, through the real pipeline.

Each stays inside every stage's allowed set; ``two_tower`` picks exactly the Two-Tower's top; the oracle's
planted-taste share follows ``labeler.oracle_precision``; the oracle refuses a dataset without planted truth;
and a builtin run lands in the store by run id like an LLM run, readable by the trainer, never in the cache.
"""
from __future__ import annotations

import json
import random
import subprocess

import pytest
import sqlalchemy as sa

from coldlabel.config import load_settings
from coldlabel.data.workspace import Workspace
from coldlabel.errors import ColdlabelError
from coldlabel.store import Store
from coldlabel.store.schema import llm_calls
from labeler import builtin, pipeline, prompts
from labeler.endpoint_check import check_endpoint
from labeler.report import write_report
from labeler.runs import start_run
from tests.support.cli import COLDLABEL
from tests.support.datasets import TEST_OVERRIDES, copy_dataset, settings_for
from tests.test_pipeline import assert_inside_allowed, label
from trainer.data import labels_from_store, load_training_data
from workers.inline import run_inline
from workers.readiness import endpoint_problem

# Wider than the test defaults: 4 subcategories x 3 items preselected for 4 final ranks, so the oracle's
# item-level precision has both kinds of item to choose from (the thesis defaults are wider still).
WIDE = ["labeler.top_k_subcategories=4", "labeler.final_top_k=4"]


def users_of(root, n: int, skip: int = 0) -> list[int]:
    return sorted(u for u, seq in Workspace.of(root, "tiny").sequences.items() if seq)[skip: skip + n]


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'labels.db'}") as s:
        yield s


def taste_share(root, outcomes) -> float:
    truth = builtin.planted(Workspace.of(root, "tiny"))
    edges = [(o.user_id, e.item_id) for o in outcomes for e in o.edges]
    return sum(truth.on_taste(u, a) for u, a in edges) / len(edges)


@pytest.mark.parametrize("endpoint", builtin.KINDS)
def test_picks_stay_inside_the_allowed_sets(tiny_root, store, endpoint):
    settings = settings_for(tiny_root)
    space = pipeline.load_space(settings, "tiny")
    for user in users_of(tiny_root, 4):
        out = label(settings, store, user, run_id=endpoint, endpoint=endpoint)
        assert_inside_allowed(out, space, settings)
        assert out.counters.fallbacks == 0 and out.counters.invalid_ids == 0  # parsed like any usable answer
        assert out.edges and all(not e.from_fallback for e in out.edges)
    again = label(settings, store, users_of(tiny_root, 1)[0], run_id=f"{endpoint}-again", endpoint=endpoint)
    first = store.export_edges(endpoint)
    assert sorted(e.item_id for e in again.edges) == sorted(e.item_id for e in first if e.user_idx == again.user_idx)


def test_two_tower_picks_are_the_two_tower_top(tiny_root, store):
    settings = settings_for(tiny_root)
    s = settings.labeler
    space = pipeline.load_space(settings, "tiny")
    for user in users_of(tiny_root, 3, skip=5):
        out = label(settings, store, user, run_id="tt", endpoint="two_tower")
        us = space.for_user(user)
        by = {(r.stage, r.part): r.values for r in out.stages}
        best = {sub: us.candidates[sub][0].score for subs in us.subcategories.values() for sub in subs}
        cats = sorted(us.categories, key=lambda c: -max(best[sub] for sub in us.subcategories[c]))
        assert by[("categories", "")] == cats[: s.top_k_categories]
        allowed = [sub for c in by[("categories", "")] for sub in us.subcategories[c]]
        assert by[("subcategories", "")] == sorted(allowed, key=lambda sub: -best[sub])[: s.top_k_subcategories]
        pre = {}
        for sub in by[("subcategories", "")]:
            top = us.candidates[sub][: s.items_per_subcategory]  # candidates come in Two-Tower score order
            assert by[("items", sub)] == [c.asin for c in top]
            pre.update({c.asin: c.score for c in top})
        assert by[("rerank", "")] == sorted(pre, key=lambda a: -pre[a])[: s.final_top_k]


def test_oracle_precision_moves_the_planted_taste_share(tiny_root, store):
    users = users_of(tiny_root, 25)
    shares = {}
    for name, endpoint, extra in (("random", "random", []), ("p02", "oracle", ["labeler.oracle_precision=0.2"]),
                                  ("p09", "oracle", ["labeler.oracle_precision=0.9"])):
        settings = settings_for(tiny_root, *WIDE, *extra)
        shares[name] = taste_share(tiny_root, [label(settings, store, u, run_id=name, endpoint=endpoint)
                                               for u in users])
    assert shares["p09"] >= 0.75, shares
    assert shares["p02"] <= 0.4, shares
    assert shares["p09"] > shares["random"] + 0.2, shares


def test_oracle_picks_follow_the_precision():
    pool = [f"t{i}" for i in range(50)] + [f"o{i}" for i in range(50)]
    rng = random.Random(0)
    for p in (0.1, 0.5, 0.9):
        picks = [v for _ in range(200) for v in builtin.oracle_picks(pool, 10, lambda v: v[0] == "t", p, rng)]
        assert abs(sum(v[0] == "t" for v in picks) / len(picks) - p) < 0.05
    # routing keeps both kinds open; a used-up kind gives way to the other
    assert {v[0] for v in builtin.oracle_picks(pool, 2, lambda v: v[0] == "t", 1.0, rng, keep_both=True)} == {"t", "o"}
    assert sorted(builtin.oracle_picks(["t1", "o1", "o2"], 3, lambda v: v[0] == "t", 1.0, rng)) == ["o1", "o2", "t1"]


def test_oracle_refuses_a_dataset_without_planted_truth(tiny_root, tmp_path, store):
    root = copy_dataset(tiny_root, tmp_path / "real")
    Workspace.of(root, "tiny").truth_file.unlink()  # what a real dataset looks like
    settings = settings_for(root)
    with pytest.raises(ColdlabelError, match="planted truth"):
        start_run(store, settings, "tiny", users=2, endpoint="oracle")
    with pytest.raises(ColdlabelError, match="planted truth"):
        pipeline.open_context(settings, "tiny", "oracle", store=store)
    assert start_run(store, settings, "tiny", users=2, endpoint="random").endpoint == "random"


def test_a_builtin_run_lands_in_the_store_for_the_trainer(tiny_root, tmp_path):
    url = f"sqlite:///{tmp_path / 'run.db'}"
    settings = settings_for(tiny_root, f"store.url={url}", *WIDE, "labeler.oracle_precision=0.9")
    with Store(url) as store:
        run = start_run(store, settings, "tiny", users=12, endpoint="oracle")
        result = run_inline(settings, run.id, store.incomplete_users(run.id))
        assert result.done == 12 and store.get_run(run.id).status == "done"
        edges, triplets = list(store.export_edges(run.id)), list(store.export_triplets(run.id))
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(llm_calls)).scalar() == 0  # never cached
        md = write_report(store, run.id, settings, tmp_path / "report").read_text()
    assert edges and triplets and {e.user_idx for e in edges} <= set(users_of(tiny_root, 12))
    ws = Workspace.of(tiny_root, "tiny")
    labels = labels_from_store(ws, load_training_data(ws, settings), url, run.id)
    assert labels.n_edges == len(edges) and labels.n_triplets == len(triplets)
    assert "Builtin labeler `oracle`" in md and "p = 0.9" in md and "builtin answers" in md
    assert f"| `oracle` edges (builtin) | {len(edges)} |" in md and "LLM edges" not in md


def test_builtin_endpoints_need_no_server():
    settings = load_settings(None, ["labeler.endpoint=two_tower", "endpoints.bad.base_url=builtin://x",
                                    "endpoints.bad.model=gpt", "endpoints.bad.dialect=builtin"], environ={})
    assert endpoint_problem(settings) is None  # a worker on a builtin labeler starts without any LLM server
    assert check_endpoint(settings, "oracle")[0]
    assert not check_endpoint(settings, "bad")[0]
    with pytest.raises(ColdlabelError, match="random, two_tower, oracle"):
        builtin.answerer(settings, "bad", "tiny")


@pytest.mark.slow  # `coldlabel` subprocesses (each imports torch)
def test_the_oracle_from_the_command_line(tiny_root, tmp_path):
    root = copy_dataset(tiny_root, tmp_path / "data")
    base = [*COLDLABEL, *[a for o in TEST_OVERRIDES for a in ("--set", o)], "--set", f"data.root={root}",
            "--set", f"store.url=sqlite:///{tmp_path / 'cli.db'}"]
    start = [*base, "label", "start", "-d", "tiny", "--endpoint", "oracle", "--set", "labeler.oracle_precision=0.9",
             "--users", "3", "--inline"]
    done = subprocess.run(start, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with Store(f"sqlite:///{tmp_path / 'cli.db'}") as store:
        (run,) = store.list_runs()
        assert run.config["labeler"]["oracle_precision"] == 0.9 and store.run_progress(run.id).done == 3
    Workspace.of(root, "tiny").truth_file.unlink()
    refused = subprocess.run(start, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "planted truth" in refused.stderr and "Traceback" not in refused.stderr


def test_builtin_answers_items_in_the_prompts_own_handles(tiny_root):
    """Prompt v3 shows cN handles; a builtin labeler answers with them, as a model must, and the parser maps
    them back to the very items it chose (builtin.asin_of is Prompt.item_of)."""
    space = pipeline.load_space(settings_for(tiny_root), "tiny")
    us = space.for_user(users_of(tiny_root, 1)[0])
    sub, cands = next((s, c) for s, c in us.candidates.items() if len(c) >= 3)
    shown = [prompts.CandidateView(c.asin, c.title, " > ".join(c.category_path)) for c in reversed(cands)]
    prompt = prompts.items_prompt(prompts.UserView(us.user_id, ()), sub, shown, 2)
    answer = builtin.BuiltinAnswerer("two_tower", "two_tower", 0, 1.0, 5.0).for_user(us).answer(prompt)["asins"]
    assert answer and set(answer) <= set(prompt.answer_values) and not set(answer) & set(prompt.allowed)
    assert prompt.parse(json.dumps({"asins": answer})).values == [c.asin for c in cands[:2]]  # Two-Tower order
    assert [builtin.asin_of(prompt, h) for h in answer] == [c.asin for c in cands[:2]]
    with pytest.raises(ValueError, match="names no item"):
        builtin.asin_of(prompt, "c99")
