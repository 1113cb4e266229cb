"""Leaf clusters: the size cap, the k-means split, the hash fallback, readable descriptions, interest leaves."""
from __future__ import annotations

import numpy as np
import pytest

from coldlabel.data.workspace import Item
from retrieval.leaves import (
    build_leaves,
    cap_split,
    interest_leaves,
    item_leaf_ids,
    kmeans_ip,
    split_group,
    stable_hash,
)

BIG = ("Beauty", "Skin Care", "Face", "Moisturizers")
SMALL = ("Beauty", "Makeup", "Lips")


def catalog(n_big=450, n_small=30):
    items = []
    for i in range(n_big):
        word = ["night cream", "day cream", "serum"][i % 3]
        items.append(Item(i, f"B{i:05d}", f"Glow {word} {i}", "", ["Acme", "Lumen"][i % 2], BIG))
    for j in range(n_small):
        i = n_big + j
        items.append(Item(i, f"S{i:05d}", f"Matte lipstick {j}", "", "Rouge", SMALL))
    return items


def clustered_vectors(items, dim=8, seed=0):
    """Three well-separated directions inside the big group (by title word), random elsewhere."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:3] * 3
    v = rng.normal(size=(len(items), dim)) * 0.3
    for it in items:
        if it.category_path == BIG:
            v[it.idx] += centres[it.idx % 3]
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_small_group_is_one_leaf_and_big_group_is_split_by_kmeans_under_the_cap():
    items = catalog()
    leaves = build_leaves(items, clustered_vectors(items), max_leaf_size=200, iters=10, seed=0)
    small = [lf for lf in leaves if lf.path == SMALL]
    assert len(small) == 1 and small[0].method == "whole" and small[0].id == "Beauty > Makeup > Lips"
    big = [lf for lf in leaves if lf.path == BIG]
    assert len(big) >= 3 and all(lf.method == "kmeans" for lf in big)
    assert all(len(lf.items) <= 200 for lf in leaves)
    assert sorted(i for lf in leaves for i in lf.items) == list(range(len(items)))  # a partition
    assert len({lf.id for lf in leaves}) == len(leaves)
    # k-means found the planted directions: each leaf is (almost) one title word.
    for lf in big:
        kinds = {i % 3 for i in lf.items}
        assert len(kinds) == 1


def test_cap_is_enforced_even_when_kmeans_is_unbalanced():
    items = catalog(n_big=500)
    v = np.tile(np.eye(8)[0], (len(items), 1)).astype(np.float32)  # identical vectors: one giant cluster
    v[::50] = np.eye(8)[1]
    leaves = build_leaves(items, v, max_leaf_size=200, iters=5, seed=0)
    assert max(len(lf.items) for lf in leaves) <= 200
    assert sum(len(lf.items) for lf in leaves) == len(items)


def test_hash_fallback_without_vectors_and_with_too_few_vectors():
    items = catalog()
    no_vectors = build_leaves(items, None, max_leaf_size=200, iters=10, seed=0)
    big = [lf for lf in no_vectors if lf.path == BIG]
    assert big and all(lf.method == "hash" for lf in big) and all(len(lf.items) <= 200 for lf in no_vectors)
    # Hash buckets are stable: the same asin lands in the same bucket in every run and process.
    k = 3
    expected = {}
    for it in items[:450]:
        expected.setdefault(stable_hash(it.asin) % k, []).append(it.idx)
    got = sorted(sorted(lf.items) for lf in big)
    assert sum(len(b) for b in got) == 450
    assert all(len(b) <= 200 for b in expected.values())  # so no cap split: leaves == hash buckets
    assert got == sorted(sorted(b) for b in expected.values())
    # Too few usable vectors (most rows zero) -> hash fallback as well.
    v = clustered_vectors(items)
    v[:445] = 0.0
    few = build_leaves(items, v, max_leaf_size=200, iters=10, seed=0)
    assert all(lf.method == "hash" for lf in few if lf.path == BIG)


def test_split_group_homes_items_without_vectors():
    items = catalog(n_big=450)
    v = clustered_vectors(items)
    v[[0, 1, 2]] = 0.0  # three items lack vectors, the rest are fine
    idxs = list(range(450))
    buckets, method = split_group(idxs, [items[i].asin for i in idxs], v, 200, 5, np.random.default_rng(0))
    assert method == "kmeans" and sorted(i for b in buckets for i in b) == idxs
    assert all(len(b) <= 200 for b in buckets)


def test_kmeans_ip_is_seeded():
    v = clustered_vectors(catalog())[:450]
    a = kmeans_ip(v, 3, 5, np.random.default_rng(1))
    b = kmeans_ip(v, 3, 5, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_cap_split_parts():
    parts = cap_split(list(range(401)), 200)
    assert [len(p) for p in parts] == [134, 134, 133] and [i for p in parts for i in p] == list(range(401))
    assert cap_split([1, 2], 200) == [[1, 2]]


def test_descriptions_are_readable():
    items = catalog()
    leaves = build_leaves(items, clustered_vectors(items), max_leaf_size=200, iters=10, seed=0)
    lips = next(lf for lf in leaves if lf.path == SMALL)
    assert lips.description.startswith("Beauty > Makeup > Lips (30 items)")
    assert "matte" in lips.description and "brands: Rouge" in lips.description
    big = next(lf for lf in leaves if lf.path == BIG)
    assert big.id.startswith("Beauty > Skin Care > Face > Moisturizers #")


def test_interest_leaves_first_seen_order_dedup_and_cap():
    item_leaf = ["a", "b", "c", "d", "e", "f", "g", "a2"]
    seq = [6, 0, 1, 0, 2, 1, 3, 4, 5, 7]
    # history 9 drops item 6 (leaf g); first appearances then: a, b, c, d, e -> capped at 5.
    assert interest_leaves(seq, item_leaf, history=9, cap=5) == ["a", "b", "c", "d", "e"]
    assert interest_leaves(seq, item_leaf, history=4, cap=5) == ["d", "e", "f", "a2"]
    assert interest_leaves(seq, item_leaf, history=50, cap=2) == ["g", "a"]
    assert interest_leaves([], item_leaf, history=50, cap=5) == []


def test_item_leaf_ids_cover_every_item():
    items = catalog(n_big=10, n_small=5)
    leaves = build_leaves(items, None, max_leaf_size=200, iters=1, seed=0)
    ids = item_leaf_ids(leaves, len(items))
    assert ids[:10] == ["Beauty > Skin Care > Face > Moisturizers"] * 10 and ids[10] == "Beauty > Makeup > Lips"


@pytest.mark.parametrize("cap", [2, 7, 50])
def test_cap_holds_for_any_setting(cap):
    items = catalog(n_big=120, n_small=13)
    leaves = build_leaves(items, clustered_vectors(items), max_leaf_size=cap, iters=3, seed=0)
    assert max(len(lf.items) for lf in leaves) <= cap


def test_leaves_built_on_workspace(tmp_path):
    """On a built workspace with a small cap: leaves.json respects it and users have <= 5 interest leaves."""
    from retrieval.artefacts import load_json
    from retrieval.build import build
    from tests.test_retrieval_build import planted_workspace, retrieval_settings

    ws = planted_workspace(tmp_path / "w", n_users=20, items_per_sub=12, cold_per_sub=2)
    build(ws, retrieval_settings("retrieval.tt_epochs=3", "retrieval.max_leaf_size=5", "retrieval.interest_leaves=2"))
    data = load_json(ws, "leaves", "leaves.json")
    assert max(len(lf["items"]) for lf in data["leaves"]) <= 5
    assert {lf["method"] for lf in data["leaves"]} == {"kmeans"}
    users = load_json(ws, "leaves", "user_leaves.json")
    assert users and all(1 <= len(v) <= 2 for v in users.values())
    for u, leaves in users.items():
        seq = ws.sequences[int(u)]
        assert leaves == interest_leaves(seq, data["item_leaf"], 50, 2)
