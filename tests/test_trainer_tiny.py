"""The trainer on the real `tiny` dataset: data invariants, consistency with the retrieval's recall@M,
metric ranges, and an experiment grid that is saved and reused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support.datasets import settings_for
from trainer import data
from trainer.evaluate import evaluate, full_catalog_search
from trainer.experiments import run_experiments
from trainer.train import train


@pytest.fixture(scope="module")
def tiny(tiny_root):
    settings = settings_for(tiny_root)
    ws = data.open_workspace(tiny_root, "tiny")
    td = data.load_training_data(ws, settings)
    ev = data.load_eval_data(ws, settings)
    cfg = data.train_config(settings, epochs=2, batch_size=64, negatives=20, hidden=32, max_len=20, patience=0)
    return ws, settings, td, ev, cfg


def test_training_data_matches_the_workspace(tiny):
    ws, _, td, ev, _ = tiny
    assert set(np.flatnonzero(td.cold).tolist()) == ws.cold_items and td.cold.any()
    for u in td.valid_users:
        assert td.val_targets[np.searchsorted(td.val_users, u)] == ws.sequences[int(u)][-1]
        assert td.fit.row(u).tolist() == ws.sequences[int(u)][:-1]
        pool = set(td.neg_pool.row(u).tolist())
        assert pool and not pool & set(td.seen.row(u).tolist()) and not pool & ws.cold_items
    train_items = {(x.user_idx, x.item_idx) for x in ws.train}
    for row, u in enumerate(ev.users):  # test positives: weight > 0, never a training item of that user
        for item in ev.positives.row(row):
            assert (int(u), int(item)) not in train_items
    assert len(ev.users) and ev.m == 200


@pytest.mark.parametrize("m", [5, 20, 60])
def test_two_tower_candidate_recall_matches_retrieval(tiny, m):
    ws, _, td, ev, _ = tiny
    res = evaluate(None, td, ev, mode="tw", ks=(5, m), m=m)
    expected = data.retrieval_recall(ws, m)
    for split in ("all", "cold", "warm"):
        assert res["metrics"][split]["cand_recall_pooled"] == pytest.approx(expected[split])
        # with K = M every listed positive counts, so Recall@M is the per-user candidate recall
        assert res["metrics"][split][f"recall@{m}"] == pytest.approx(res["metrics"][split]["cand_recall"])
    assert res["users"]["cold"] > 0 and res["positives"]["cold"] > 0
    if m == 5:
        assert expected["all"] < 1.0  # a real ceiling, not a trivially complete candidate list


def _in_unit_range(res):
    for split, metrics in res["metrics"].items():
        for name, value in metrics.items():
            assert value is not None and 0.0 <= value <= 1.0, (split, name, value)
        ks = sorted(int(n.split("@")[1]) for n in metrics if n.startswith("recall@"))
        recalls = [metrics[f"recall@{k}"] for k in ks]
        assert recalls == sorted(recalls) and recalls[-1] <= metrics["cand_recall"] + 1e-12


def test_trained_sasrec_metrics_are_bounded_and_share_the_ceiling(tiny):
    _, _, td, ev, cfg = tiny
    model = train(td, cfg, hook=lambda *_: None).model
    by_mode = {mode: evaluate(model, td, ev, mode=mode, max_len=cfg.max_len) for mode in ("sas", "tw", "hybrid")}
    for res in by_mode.values():
        _in_unit_range(res)
    ceilings = {mode: res["metrics"]["all"]["cand_recall"] for mode, res in by_mode.items()}
    assert len(set(ceilings.values())) == 1  # re-ranking never changes which items are candidates
    full = evaluate(model, td, ev, mode="sas", max_len=cfg.max_len, search=full_catalog_search(td), m=td.n_items)
    _in_unit_range(full)
    assert full["metrics"]["all"]["cand_recall"] == 1.0  # every unseen item is listed


def _write_pseudo_edges(ws, td, path):
    """Pseudo edges from each of 40 users to the cold items among their Two-Tower candidates."""
    users = {idx: uid for uid, idx in ws.mappings["user2idx"].items()}
    items = {idx: asin for asin, idx in ws.mappings["item2idx"].items()}
    ev = data.load_eval_data(ws, settings_for(ws.root.parent))
    ids, _ = ev.search(td.valid_users[:40], 30)
    path.mkdir(parents=True, exist_ok=True)
    rows = ["user\tuser_idx\titem\titem_idx\tweight\tscore\tsubcategory\tfrom_fallback"]
    for u, row in zip(td.valid_users[:40], ids):
        for i in row[(row >= 0) & td.cold[np.clip(row, 0, None)]][:2]:
            rows.append(f"{users[int(u)]}\t{u}\t{items[int(i)]}\t{i}\t0.8\t4\tsub\t0")
    (path / "edges.tsv").write_text("\n".join(rows) + "\n")


def test_experiment_grid_saves_results_and_skips_finished_runs(tiny, tmp_path):
    ws, _, td, ev, cfg = tiny
    _write_pseudo_edges(ws, td, tmp_path / "labels")
    labels = data.labels_from_tsv(ws, td, tmp_path / "labels")
    assert labels.n_edges > 0 and labels.n_triplets == 0
    settings = ("E0", "E1", "TwoTower", "GRU4Rec", "BERT4Rec")
    report = run_experiments(td, ev, cfg.with_(epochs=1), labels, tmp_path / "out", settings, seeds=(0, 1),
                             hook=lambda *_: None)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(report["summary"]))
    assert set(saved["summary"]) == set(settings) and len(saved["runs"]) == 10
    e0 = saved["summary"]["E0"]
    assert set(e0) == {"candidates/hybrid", "candidates/sas", "full/sas"}
    assert set(saved["summary"]["E1"]) == {"candidates/hybrid", "candidates/sas"}
    assert set(saved["summary"]["GRU4Rec"]) == {"candidates/sas", "full/sas"}
    cell = e0["candidates/hybrid"]["cold"]["recall@20"]
    assert cell["n"] == 2 and cell["std"] >= 0 and 0 <= cell["mean"] <= 1
    assert saved["summary"]["TwoTower"]["candidates/tw"]["all"]["recall@10"]["std"] == 0.0  # no training, no seed
    e1 = json.loads((tmp_path / "out" / "runs" / "E1" / "seed0.json").read_text())
    assert e1["train"]["history"][0]["sim"] is not None and e1["labels"]["edges"] == labels.n_edges
    e0_run = json.loads((tmp_path / "out" / "runs" / "E0" / "seed0.json").read_text())
    assert e0_run["train"]["history"][0]["sim"] is None and e0_run["labels"] is None
    # a second call trains nothing and returns the saved results
    rerun = []
    again = run_experiments(td, ev, cfg.with_(epochs=1), labels, tmp_path / "out", settings, seeds=(0, 1),
                            hook=lambda e, d: pytest.fail("retrained"), on_run=rerun.append)
    assert all(r["cached"] for r in rerun) and again["summary"] == report["summary"]
    # another config is another key: that (setting, seed) runs again
    fresh = []
    run_experiments(td, ev, cfg.with_(epochs=1, lr=1e-3), labels, tmp_path / "out", ("E0",), seeds=(0,),
                    hook=lambda *_: None, on_run=fresh.append)
    assert fresh[0]["cached"] is False
