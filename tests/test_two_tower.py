"""Two-Tower: it learns, cold items export as the content projection only, untrained users are zero."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.two_tower import train
from tests.test_retrieval_build import planted_workspace, retrieval_settings


def clustered(n_users=60, n_items=80, groups=4, dim=16, seed=0):
    """Content vectors in `groups` clusters; every user buys only in their group."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    item_group = np.arange(n_items) % groups
    items = centres[item_group] + 0.5 * rng.normal(size=(n_items, dim))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    user_group = np.arange(n_users) % groups
    rows = []
    for u in range(n_users):
        pool = np.flatnonzero(item_group[: n_items - 8] == user_group[u])  # the last 8 items are never bought
        for i in rng.choice(pool, 4, replace=False):
            rows.append((u, i, rng.choice([1.0, 0.3])))
    rows = np.array(rows)
    users_c = np.zeros((n_users, dim))
    for u in range(n_users):
        bought = rows[rows[:, 0] == u, 1].astype(int)
        m = items[bought].mean(axis=0)
        users_c[u] = m / np.linalg.norm(m)
    return (users_c.astype(np.float32), items.astype(np.float32), rows[:, 0].astype(int), rows[:, 1].astype(int),
            rows[:, 2].astype(np.float32))


KW = {"dim": 8, "epochs": 30, "lr": 0.01, "batch_size": 32, "temperature": 0.1, "seed": 0}


def test_training_loss_falls():
    uc, ic, u, i, w = clustered()
    res = train(uc, ic, u, i, w, **KW)
    assert len(res.losses) == 30
    assert res.losses[-1] < 0.7 * res.losses[0]
    assert res.user_vectors.dtype == np.float32 and res.item_vectors.shape == (80, 8)
    np.testing.assert_allclose(np.linalg.norm(res.item_vectors, axis=1), 1.0, rtol=1e-5)


def test_same_seed_same_vectors_other_seed_differs():
    data = clustered()
    a = train(*data, **KW)
    b = train(*data, **KW)
    c = train(*data, **{**KW, "seed": 1})
    np.testing.assert_array_equal(a.item_vectors, b.item_vectors)
    assert not np.allclose(a.item_vectors, c.item_vectors)


def test_untrained_items_and_users_export_content_projection_only():
    uc, ic, u, i, w = clustered()
    uc[59] = 0.0  # a user with no history: zero content...
    keep = u != 59  # ...and no training rows
    res = train(uc, ic, u[keep], i[keep], w[keep], **KW)
    W = res.model.item_proj.weight.detach().numpy()
    for item in range(72, 80):  # never bought in training
        z = W @ ic[item]
        np.testing.assert_allclose(res.item_vectors[item], z / np.linalg.norm(z), atol=1e-6)
    # A trained item is not just its projection: its learned ID part is kept.
    z = W @ ic[0]
    assert not np.allclose(res.item_vectors[0], z / np.linalg.norm(z), atol=1e-3)
    assert not res.user_vectors[59].any()
    assert res.trained_items == len(np.unique(i[keep])) and res.trained_users == 59


def test_rejects_empty_training_set():
    uc, ic, *_ = clustered()
    with pytest.raises(ValueError, match="no training positives"):
        train(uc, ic, np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32), **KW)


def test_weighted_loss_matches_equation():
    """Eq. 4.3 on a hand-sized batch: mean_b w_b * CE(S_b / T, b)."""
    uc, ic, *_ = clustered(n_users=4, n_items=24, groups=2)
    from retrieval.two_tower import TwoTower

    torch.manual_seed(0)
    model = TwoTower(uc, ic, 8)
    ub, ib, wb = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3]), torch.tensor([1.0, 0.3, 1.0])
    got = float(model.loss(ub, ib, wb, 0.05).detach())
    with torch.no_grad():
        s = (model.users(ub) @ model.items(ib).T / 0.05).numpy()
    logsm = s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)
    expected = float(np.mean(wb.numpy() * -np.diag(logsm)))
    assert got == pytest.approx(expected, rel=1e-4)


def test_exported_cold_vectors_equal_w_c_from_saved_model(tmp_path):
    """On a built workspace: items without training rows (all strict cold items among them) == norm(W c)."""
    from retrieval.artefacts import load_array, load_tower_vectors
    from retrieval.build import build

    ws = planted_workspace(tmp_path / "w", n_users=20, items_per_sub=8, cold_per_sub=2)
    build(ws, retrieval_settings("retrieval.tt_epochs=5"))
    state = torch.load(ws.retrieval / "two_tower" / "model.pt")
    W = state["item_proj.weight"].numpy()
    content = load_array(ws, "content", "item_content.npy")
    _, items = load_tower_vectors(ws)
    trained = {x.item_idx for x in ws.train if x.weight > 0}
    untrained = [i for i in range(len(items)) if i not in trained]
    assert ws.cold_items and ws.cold_items <= set(untrained)
    for i in untrained:
        z = W @ content[i]
        np.testing.assert_allclose(items[i], z / np.linalg.norm(z), atol=1e-5)
    E = state["item_id.weight"].numpy()
    for i in sorted(trained)[:5]:
        z = E[i] + W @ content[i]
        np.testing.assert_allclose(items[i], z / np.linalg.norm(z), atol=1e-5)
