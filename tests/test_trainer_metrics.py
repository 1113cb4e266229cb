"""Metrics against hand-computed values with ties, independence from list position, fusion, and the
cold/warm split of a controlled evaluation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.support.trainer_toy import COLD, toy_data
from trainer.batches import gather, windows
from trainer.dataset import EvalData, Ragged
from trainer.evaluate import evaluate, fuse, model_scores, subset_metrics, validation_ndcg, zscore
from trainer.metrics import pessimistic_ranks, user_metrics
from trainer.model import SASRec

NEG_INF = -np.inf


def test_hand_example_with_ties():
    # One user, 6 slots (the last is padding). The positive (slot 2) ties with two non-relevant items at 0.5,
    # below one item at 0.9. Pessimistic rank: 1 above + 2 tied non-relevant = 3 (0-based). The user has 2
    # positives; the other one was never listed.
    scores = np.array([[0.9, 0.5, 0.5, 0.5, 0.1, NEG_INF]])
    relevant = np.array([[False, False, True, False, False, False]])
    m = user_metrics(scores, relevant, np.array([2]), [3, 5])
    assert m["recall@3"][0] == 0.0
    assert m["recall@5"][0] == 0.5
    assert m["ndcg@3"][0] == 0.0
    assert m["ndcg@5"][0] == pytest.approx((1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert m["mrr"][0] == pytest.approx(1 / 4)
    assert m["cand_recall"][0] == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_metrics_do_not_depend_on_where_the_ground_truth_sits(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(6, 12)).astype(float)  # many ties
    relevant = rng.random((6, 12)) < 0.2
    n_pos = relevant.sum(1) + 1
    base = user_metrics(scores, relevant, n_pos, [1, 3, 5])
    for _ in range(3):
        perm = rng.permutation(12)
        moved = user_metrics(scores[:, perm], relevant[:, perm], n_pos, [1, 3, 5])
        for name in base:
            np.testing.assert_allclose(moved[name], base[name], equal_nan=True)
    # ground truth first or last in an all-tied list: the same (worst) rank either way
    flat = np.zeros((1, 5))
    first, last = np.eye(5, dtype=bool)[[0]], np.eye(5, dtype=bool)[[4]]
    assert pessimistic_ranks(flat, first)[1][0] == pessimistic_ranks(flat, last)[1][0] == 4


def test_tied_positives_take_the_last_slots_of_their_block():
    scores = np.array([[0.5, 0.5, 0.5, 0.2]])
    relevant = np.array([[True, True, False, False]])
    _, ranks = pessimistic_ranks(scores, relevant)
    assert sorted(ranks.tolist()) == [1, 2]
    m = user_metrics(scores, relevant, np.array([2]), [2])
    assert m["recall@2"][0] == 0.5
    assert m["ndcg@2"][0] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_user_without_positives_is_left_out():
    m = user_metrics(np.zeros((2, 3)), np.array([[True, False, False], [False] * 3]), np.array([1, 0]), [2])
    assert np.isnan(m["recall@2"][1]) and np.isnan(m["mrr"][1])
    with pytest.raises(ValueError):
        user_metrics(np.zeros((1, 3)), np.ones((1, 3), bool), np.array([1]), [2])


def test_hybrid_is_a_per_user_zscore_blend():
    sas = np.array([[1.0, 2.0, 3.0, NEG_INF], [5.0, 5.0, 5.0, 5.0]])
    tw = np.array([[0.3, 0.2, 0.1, NEG_INF], [0.1, 0.2, 0.3, 0.4]])
    z = zscore(sas)
    assert z[0, 3] == NEG_INF and np.allclose(z[1], 0.0)  # padding stays out; a constant row is all ties
    assert np.allclose(z[0, :3], [-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    fused = fuse(sas, tw, "hybrid", 0.5)
    assert np.allclose(fused[0, :3], 0.5 * z[0, :3] + 0.5 * zscore(tw)[0, :3])
    # invariant to a per-user affine rescaling of either score (that is what the normalisation is for)
    assert np.allclose(fuse(sas * 100 + 7, tw, "hybrid", 0.5)[:, :3], fused[:, :3])
    assert np.array_equal(fuse(sas, tw, "tw", 0.5), tw) and np.array_equal(fuse(sas, tw, "sas", 0.5), sas)


def test_cold_and_warm_splits_rank_without_each_other():
    td = toy_data()
    user = int(td.valid_users[0])
    warm_pos = int(td.neg_pool.row(user)[0])
    cold_pos = COLD[0]
    others = [int(i) for i in td.neg_pool.row(user)[1:4]]
    ids = np.array([[warm_pos, cold_pos, *others, -1]])
    tw = np.array([[0.9, 0.8, 0.3, 0.2, 0.1, NEG_INF]], dtype=np.float32)
    ev = EvalData(np.array([user]), Ragged.from_rows([[cold_pos, warm_pos]], 1),
                  lambda users, m: (ids[:, :m], tw[:, :m]), 6)
    res = evaluate(None, td, ev, mode="tw", ks=(1, 2))["metrics"]
    assert res["all"]["recall@1"] == 0.5 and res["all"]["recall@2"] == 1.0
    assert res["cold"]["recall@1"] == 1.0  # the warm positive above it is taken out of the cold ranking
    assert res["warm"]["recall@1"] == 1.0 and res["warm"]["mrr"] == 1.0
    assert res["cold"]["cand_recall_pooled"] == res["warm"]["cand_recall_pooled"] == 1.0
    # a positive the candidates never list counts as a miss in the denominator
    ev2 = EvalData(ev.users, Ragged.from_rows([[cold_pos, warm_pos, COLD[1]]], 1), ev.search, 6)
    res2 = evaluate(None, td, ev2, mode="tw", ks=(5,))["metrics"]
    assert res2["cold"]["recall@5"] == 0.5 and res2["cold"]["cand_recall"] == 0.5
    assert res2["all"]["cand_recall_pooled"] == pytest.approx(2 / 3)


def test_metrics_of_a_group_of_users_average_only_that_group():
    td = toy_data()
    a, b = (int(u) for u in td.valid_users[:2])
    ids = {u: np.array([int(td.neg_pool.row(u)[0]), COLD[0], int(td.neg_pool.row(u)[1])]) for u in (a, b)}
    tw = {a: [0.1, 0.9, 0.5], b: [0.9, 0.5, 0.1]}  # a's cold positive first, b's second

    def search(users, m):
        return (np.stack([ids[int(u)] for u in users])[:, :m],
                np.array([tw[int(u)] for u in users], dtype=np.float32)[:, :m])

    ev = EvalData(np.array([a, b]), Ragged.from_rows([[COLD[0]], [COLD[0]]], 2), search, 3)
    res = evaluate(None, td, ev, mode="tw", ks=(1,), keep_users=True)
    assert res["metrics"]["cold"]["recall@1"] == 0.5
    assert subset_metrics(res["per_user"], np.array([a]))["cold"]["recall@1"] == 1.0
    assert subset_metrics(res["per_user"], np.array([b]))["cold"]["recall@1"] == 0.0
    both = subset_metrics(res["per_user"], np.array([b, a, 10_000]))  # a user never evaluated is ignored
    assert both["cold"]["recall@1"] == 0.5 and both["cold"]["users"] == 2
    assert both["warm"]["recall@1"] is None and both["warm"]["users"] == 0  # no warm positives at all
    assert "per_user" not in evaluate(None, td, ev, mode="tw", ks=(1,))


def test_validation_ndcg_is_the_tie_safe_ndcg_of_each_held_out_item():
    td = toy_data()
    model = SASRec(td.n_items, 8, hidden=8, layers=1, heads=1, dropout=0.0)
    with torch.no_grad():  # coarse weights: many exact ties, which must count against the target
        for p in model.parameters():
            p.copy_(torch.round(p * 20) / 20)
    got = validation_ndcg(model, td, k=5, max_len=8)
    scores = model_scores(model, windows(td.fit, td.val_users, 8))
    rows = np.arange(len(td.val_users))
    target = scores[rows, td.val_targets].copy()
    owner, items = gather(td.seen, td.val_users)
    scores[owner, items] = -np.inf
    scores[:, td.cold] = -np.inf
    scores[rows, td.val_targets] = target
    relevant = np.zeros(scores.shape, dtype=bool)
    relevant[rows, td.val_targets] = True
    want = user_metrics(scores, relevant, np.ones(len(rows), dtype=np.int64), [5])["ndcg@5"].mean()
    assert got == pytest.approx(want) and 0 < got < 1
