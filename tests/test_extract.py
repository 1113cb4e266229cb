"""Pseudo edges and triplets from a final ranking (thesis §4.3.3), with hand-checked numbers."""
from __future__ import annotations

import pytest

from labeler.extract import PreferencePair, PseudoEdge, RankedItem, extract, pseudo_edges, to_ranking, triplets


def rank(*scores: float) -> list[RankedItem]:
    return [RankedItem(f"i{n}", s) for n, s in enumerate(scores)]


def test_to_ranking_carries_scores_subcats_and_keywords():
    r = to_ranking(["a", "b"], {"a": 5, "b": 3}, subcat_of={"a": "Face"}, keywords=["serum"])
    assert r == [RankedItem("a", 5.0, ("serum",), "Face"), RankedItem("b", 3.0, ("serum",), "")]


def test_edges_keep_scores_at_or_above_min_and_normalise():
    edges = pseudo_edges("u", rank(5, 4, 2, 1.5, 0), min_score=2, score_scale=5)
    assert edges == [PseudoEdge("u", "i0", 1.0), PseudoEdge("u", "i1", 0.8), PseudoEdge("u", "i2", 0.4)]


def test_fallback_edges_are_kept_with_a_small_weight():
    edges = pseudo_edges("u", rank(5, 2.5), min_score=2, score_scale=5, fallback=True, fallback_weight=0.1)
    assert [e.item for e in edges] == ["i0", "i1"]
    assert [e.weight for e in edges] == pytest.approx([0.1, 0.05])


def test_adjacent_pairs_with_a_gap_come_first():
    # scores 5 5 3 2: adjacent gaps at (1,2)=2 and (2,3)=1; then head-vs-tail (0,3)=3.
    t = triplets("u", rank(5, 5, 3, 2), max_triplets=3, score_scale=5)
    assert t == [PreferencePair("u", "i1", "i2", pytest.approx(0.4)), PreferencePair("u", "i2", "i3", pytest.approx(0.2)),
                 PreferencePair("u", "i0", "i3", pytest.approx(0.6))]


def test_head_vs_tail_farthest_first_and_no_repeats():
    # 5 5 5 1: adjacent (2,3) gap 4; then head-vs-tail d=3 (0,3); d=2 (1,3); (0,2) tie skipped.
    t = triplets("u", rank(5, 5, 5, 1), max_triplets=5, score_scale=5)
    assert [(x.pos, x.neg) for x in t] == [("i2", "i3"), ("i0", "i3"), ("i1", "i3")]
    assert [x.weight for x in t] == pytest.approx([0.8, 0.8, 0.8])


def test_all_tied_uses_position_with_a_small_weight():
    t = triplets("u", rank(4, 4, 4), max_triplets=3, score_scale=5)
    assert [(x.pos, x.neg) for x in t] == [("i0", "i2"), ("i0", "i1"), ("i1", "i2")]
    assert all(x.weight == pytest.approx(0.1) for x in t)


def test_partial_tie_does_not_use_positions():
    # 4 4 3: adjacent (1,2); head-vs-tail (0,2); (0,1) tie is never a triplet since not all scores tie.
    t = triplets("u", rank(4, 4, 3), max_triplets=3, score_scale=5)
    assert [(x.pos, x.neg) for x in t] == [("i1", "i2"), ("i0", "i2")]


def test_positive_is_the_higher_score_even_when_ranked_lower():
    t = triplets("u", rank(2, 5), max_triplets=3, score_scale=5)
    assert t == [PreferencePair("u", "i1", "i0", pytest.approx(0.6))]


def test_cap_duplicates_and_degenerate_rankings():
    assert len(triplets("u", rank(5, 4, 3, 2, 1), max_triplets=3, score_scale=5)) == 3
    assert triplets("u", rank(5, 4), max_triplets=0, score_scale=5) == []
    assert triplets("u", rank(5), max_triplets=3, score_scale=5) == []
    dup = [RankedItem("a", 5), RankedItem("a", 1), RankedItem("b", 3)]
    t = triplets("u", dup, max_triplets=3, score_scale=5)
    assert t == [PreferencePair("u", "a", "b", pytest.approx(0.4))]
    assert all(x.pos != x.neg for x in t)


def test_fallback_triplets_are_scaled_down_and_output_is_deterministic():
    kw = dict(min_score=2, score_scale=5, max_triplets=3, fallback=True, fallback_weight=0.1)
    a = extract("u", rank(5, 4, 3, 2, 1), **kw)
    b = extract("u", rank(5, 4, 3, 2, 1), **kw)
    assert a == b
    assert [x.weight for x in a.triplets] == pytest.approx([0.02, 0.02, 0.02])
    assert [e.weight for e in a.edges] == pytest.approx([0.1, 0.08, 0.06, 0.04])


@pytest.mark.parametrize("policy", ["keep", "downweight", "drop"])
def test_flagged_items_follow_the_policy(policy):
    opts = dict(min_score=2, score_scale=5, max_triplets=3)
    plain = extract("u", rank(5, 4, 3), **opts)
    got = extract("u", rank(5, 4, 3), **opts, flagged={"i0"}, flagged_policy=policy, flagged_weight=0.1)
    if policy == "keep":
        assert got == plain
    elif policy == "downweight":  # edges on i0 and every triplet with i0 in it, x0.1; the rest unchanged
        assert [e.item for e in got.edges] == ["i0", "i1", "i2"]
        assert [e.weight for e in got.edges] == pytest.approx([0.1, 0.8, 0.6])
        assert [(t.pos, t.neg) for t in got.triplets] == [(t.pos, t.neg) for t in plain.triplets]
        for t, p in zip(got.triplets, plain.triplets):
            assert t.weight == pytest.approx(p.weight * (0.1 if "i0" in (t.pos, t.neg) else 1))
    else:  # the flagged item leaves the ranking before any label is made
        assert got == extract("u", rank(5, 4, 3)[1:], **opts)
        assert all("i0" not in (t.pos, t.neg) for t in got.triplets)
