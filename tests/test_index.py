"""FAISS candidates (seen filtering, padding) and candidate recall@M split cold / warm."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from retrieval.index import (
    CandidateIndex,
    RecallTarget,
    candidate_recall,
    candidates,
    flat_index,
    popularity_retriever,
    recall_at,
    search_filtered,
    seen_items,
)
from tests.test_retrieval_build import built, planted_workspace, retrieval_settings  # noqa: F401 (fixture)


def unit_rows(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_search_filtered_removes_seen_and_pads():
    items = unit_rows(np.eye(4) + 0.01)
    index = flat_index(items)
    q = unit_rows([[1, 0.5, 0.2, 0], [0, 0, 0, 1]])
    ids, scores = search_filtered(index, q, [np.array([0]), np.array([], dtype=np.int64)], m=3)
    assert ids[0].tolist() == [1, 2, 3] and 0 not in ids[0]
    assert ids[1][0] == 3
    assert np.all(np.diff(scores[0]) <= 0)
    ids, scores = search_filtered(index, q, [np.array([0, 1, 2]), np.array([], dtype=np.int64)], m=3)
    assert ids[0].tolist() == [3, -1, -1] and np.isneginf(scores[0][1:]).all()


def test_users_without_vector_get_no_candidates():
    items = unit_rows(np.eye(3))
    users = np.zeros((2, 3), dtype=np.float32)
    users[0] = items[1]
    ci = CandidateIndex(users, items, {0: np.array([2])})
    ids, _ = ci.search([0, 1], 2)
    assert ids[0].tolist() == [1, 0] and ids[1].tolist() == [-1, -1]
    with pytest.raises(IndexError):
        ci.search([5], 2)


def test_popularity_is_seen_filtered():
    run = popularity_retriever(np.array([5, 9, 1, 7]))
    out = run(np.array([0, 1]), [np.array([1]), np.array([], dtype=np.int64)], 3)
    assert out.tolist() == [[3, 0, 2], [1, 3, 0]]


def test_recall_at_hand_example():
    # Retriever returns fixed rankings; user 0 has a cold item at rank 1 and a warm item at rank 3;
    # user 1 has a warm item that is never retrieved.
    ranking = {0: [7, 4, 9, 5], 1: [1, 2, 3, 6]}

    def run(users, seen, m):
        return np.array([ranking[int(u)][:m] for u in users])

    target = RecallTarget(np.array([0, 1]), [np.array([4, 5]), np.array([8])],
                          [np.array([True, False]), np.array([False])], 1, 2, 0, 0)
    res = recall_at(run, target, {}, [1, 2, 4])
    assert res["cold"] == [0.0, 1.0, 1.0]
    assert res["warm"] == [0.0, 0.0, 0.5]
    assert res["all"] == [0.0, 1 / 3, 2 / 3]


def test_candidates_never_contain_training_items(built):  # noqa: F811
    ws, settings, _ = built
    seen = seen_items(ws)
    users = sorted(seen)
    ids, scores = candidates(ws, users, 30, settings)
    assert ids.shape == (len(users), 30)
    for u, row in zip(users, ids):
        assert not set(row.tolist()) & set(seen[u].tolist())
        assert (row >= 0).all()  # the catalog is large enough
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    # A disliked (weight 0) training purchase is seen too, so it is filtered as well.
    low = next(x for x in ws.train if x.weight == 0)
    assert low.item_idx not in ids[users.index(low.user_idx)]


def test_two_tower_beats_popularity_and_finds_cold_items(built):  # noqa: F811
    ws, settings, _ = built
    report = candidate_recall(ws, settings, [5, 10, 20])
    tt, pop = report["retrievers"]["two_tower"], report["retrievers"]["popularity"]
    assert report["test_positives"]["cold"] > 0 and report["test_positives"]["warm"] > 0
    assert tt["all"][1] > pop["all"][1] + 0.2
    assert tt["cold"][2] > 0.5  # cold items are reachable through their content projection
    saved = json.loads((ws.retrieval / "recall.json").read_text())
    assert saved["ms"] == [5, 10, 20] and saved["retrievers"]["two_tower"]["cold"] == tt["cold"]


@pytest.fixture
def cli_root(built, monkeypatch):  # noqa: F811
    from coldlabel import cli

    ws, _, _ = built
    overrides = ["--set", f"data.root={ws.root.parent}"]
    for item in ("retrieval.tt_epochs=40", "retrieval.tt_batch_size=64", "retrieval.tt_lr=0.01"):
        overrides += ["--set", item]
    return cli.app, ws, overrides


def test_cli_candidates_and_recall(cli_root):
    app, ws, overrides = cli_root
    runner = CliRunner()
    res = runner.invoke(app, [*overrides, "retrieval", "candidates", "--dataset", ws.name, "--users", "0,1",
                              "--m", "7", "--show", "3"])
    assert res.exit_code == 0, res.output
    assert "user 0: 7 candidates" in res.output and "user 1: 7 candidates" in res.output
    res = runner.invoke(app, [*overrides, "retrieval", "recall", "--dataset", ws.name, "--m", "5,20"])
    assert res.exit_code == 0, res.output
    assert "two_tower" in res.output and "popularity" in res.output and "content" in res.output
    res = runner.invoke(app, [*overrides, "retrieval", "candidates", "--dataset", ws.name, "--users", "a,b"])
    assert res.exit_code != 0 and "comma-separated integers" in res.output


def test_cli_reports_missing_build(tmp_path):
    from coldlabel import cli

    planted_workspace(tmp_path / "fresh", n_users=5, items_per_sub=8, cold_per_sub=2)
    res = CliRunner().invoke(cli.app, ["--set", f"data.root={tmp_path}", "retrieval", "candidates",
                                       "--dataset", "fresh", "--users", "0"])
    assert res.exit_code == 1
    flat = "".join(res.output.split())  # rich wraps long lines
    assert "meta.jsonismissing" in flat and "coldlabelretrievalbuild--datasetfresh" in flat
