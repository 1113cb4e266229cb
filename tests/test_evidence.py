"""Similar-item evidence: threshold, never the item itself, at most k, cached lazily."""
from __future__ import annotations

import numpy as np

from coldlabel.data.workspace import Item
from retrieval.evidence import Evidence, render


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def setup(k=3, min_sim=0.35):
    items = [Item(i, f"A{i}", f"Item {i}", "", "", ("Beauty", "Skin Care", "Face", f"Sub{i % 2}")) for i in range(7)]
    a = unit([1, 0, 0])
    vectors = np.stack([
        a,                        # 0: the query item
        unit([1, 0.1, 0]),        # 1: very similar
        unit([1, 0.5, 0]),        # 2: similar
        unit([1, 1, 0]),          # 3: cos 0.707
        unit([1, 2.5, 0]),        # 4: cos ~0.37  (just above 0.35)
        unit([1, 2.8, 0]),        # 5: cos ~0.336 (just below 0.35)
        unit([0, 0, 1]),          # 6: orthogonal
    ])
    sims = vectors @ a
    assert sims[4] > 0.35 > sims[5]
    return items, vectors, Evidence(items, vectors, k, min_sim)


def test_top_k_other_items_above_threshold():
    items, _, ev = setup()
    got = ev.for_item(0)
    assert ev.neighbours(0) == (1, 2, 3)  # as item indices, so a prompt can point at one it already shows
    assert got == tuple(render(items[i]) for i in (1, 2, 3))
    assert all(not s.startswith("Item 0 ") for s in got)


def test_threshold_drops_items_at_or_below_min_sim():
    items, vectors, ev = setup(k=6)
    got = ev.for_item(0)
    assert got == tuple(render(items[i]) for i in (1, 2, 3, 4))  # 5 (0.336) and 6 (0) are out
    # Exactly at the threshold is out too (strictly greater than min_sim).
    sim = float(vectors[3] @ vectors[0])
    exact = Evidence(items, vectors, 6, sim)
    assert render(items[3]) not in exact.for_item(0)


def test_isolated_item_gets_no_evidence():
    _, _, ev = setup()
    assert ev.for_item(6) == ()


def test_never_the_item_itself_even_with_duplicates():
    items = [Item(i, f"A{i}", f"Same {i}", "", "", ("X",)) for i in range(5)]
    vectors = np.tile(unit([1, 0]), (5, 1))  # all identical: FAISS may return any order
    ev = Evidence(items, vectors, 3, 0.35)
    for i in range(5):
        got = ev.for_item(i)
        assert len(got) == 3 and render(items[i]) not in got


def test_cached_and_prefetched_in_one_batch():
    _, _, ev = setup()
    ev.prefetch([0, 1, 2, 0])
    assert ev.searched == 3
    ev.for_item(1)
    ev.for_item(2)
    assert ev.searched == 3  # served from memory
    ev.for_item(4)
    assert ev.searched == 4


def test_k_zero_disables_evidence():
    _, _, ev = setup(k=0)
    assert ev.for_item(0) == ()


def test_render_is_short():
    it = Item(0, "A", "x" * 300, "", "", ("Beauty", "Skin Care", "Face", "Moisturizers"))
    text = render(it)
    assert text.startswith("xxx") and text.endswith("(Face > Moisturizers)") and len(text) < 120
    assert not text.startswith("similar")  # the prompt labels evidence, in one place
