"""The candidate space the labeler consumes: its contract, cold items inside it, and no test-split reads."""
from __future__ import annotations

import dataclasses

import pytest

from coldlabel.data.workspace import Workspace
from retrieval.space import CandidateItem, CandidateSpace, UserSpace
from tests.test_retrieval_build import built, retrieval_settings  # noqa: F401 (fixture)


def test_users_are_those_with_training_positives(built):  # noqa: F811
    ws, settings, _ = built
    space = CandidateSpace.load(ws, settings)
    expected = sorted(u for u, seq in ws.sequences.items() if seq)
    assert space.users() == expected
    test_only = set(ws.mappings["user2idx"].values()) - set(expected)
    assert test_only  # the fixture has users seen only in the test split...
    with pytest.raises(KeyError, match="no training positives"):
        space.for_user(min(test_only))  # ...and they have no candidate space


def test_user_space_contract(built):  # noqa: F811
    ws, settings, _ = built
    space = CandidateSpace.load(ws, settings)
    tax = ws.taxonomy
    seen = {}
    for x in ws.train:
        seen.setdefault(x.user_idx, set()).add(x.item_idx)
    for u in space.users():
        us = space.for_user(u)
        assert isinstance(us, UserSpace) and us.user_idx == u
        assert ws.mappings["user2idx"][us.user_id] == u
        # History: the last 4 (labeler.history_items) training positives, oldest -> newest.
        assert [it.idx for it in us.history] == ws.sequences[u][-4:]
        # Allowed sets hold exactly the categories / subcategories that have candidates.
        assert set(us.categories) == set(us.subcategories)
        assert set(us.candidates) == {s for subs in us.subcategories.values() for s in subs}
        for cat, subs in us.subcategories.items():
            assert cat in tax["categories"] and set(subs) <= set(tax["subcategories"][cat])
        all_scores = []
        for sub, cands in us.candidates.items():
            assert 1 <= len(cands) <= 6  # labeler.max_candidates_per_subcategory
            assert all(isinstance(c, CandidateItem) for c in cands)
            assert [c.score for c in cands] == sorted((c.score for c in cands), reverse=True)
            for c in cands:
                assert c.subcategory == sub == tax["item_subcategory"][str(c.item_idx)]
                item = ws.items[c.item_idx]
                assert (c.asin, c.title, c.category_path) == (item.asin, item.title, item.category_path)
                assert c.item_idx not in seen[u]
                assert len(c.evidence) <= settings.retrieval.evidence_k
                assert all(not e.startswith("similar") and item.title not in e for e in c.evidence)
            all_scores.append(cands[0].score)
        # Subcategories are listed in order of their best candidate.
        assert all_scores == sorted(all_scores, reverse=True)
        assert 1 <= len(us.interest_leaves) <= 5
        assert all(leaf in space.leaves for leaf in us.interest_leaves)


def test_cold_items_appear_among_candidates(built):  # noqa: F811
    ws, settings, _ = built
    trained = {x.item_idx for x in ws.train}
    no_train = set(range(len(ws.items))) - trained
    assert ws.cold_items <= no_train
    space = CandidateSpace.load(ws, settings)
    shown_cold = set()
    for u in space.users():
        for cands in space.for_user(u).candidates.values():
            shown_cold |= {c.item_idx for c in cands if c.item_idx in ws.cold_items}
    assert len(shown_cold) >= len(ws.cold_items) // 2


def _all_spaces(ws_root, settings) -> dict[int, UserSpace]:
    space = CandidateSpace.load(Workspace(ws_root), settings)  # a fresh Workspace: nothing cached
    return {u: space.for_user(u) for u in space.users()}


def test_candidate_space_never_reads_the_test_split(built, monkeypatch):  # noqa: F811
    ws, settings, _ = built
    before = _all_spaces(ws.root, settings)
    test_file = ws.processed / "test.tsv"
    original = test_file.read_text()
    try:
        test_file.write_text(original.splitlines()[0] + "\n")  # header only: the test split is gone
        after = _all_spaces(ws.root, settings)
        assert after == before
        # Belt and braces: any attempt to open the test split during load or queries fails loudly.
        real = Workspace.interactions

        def guarded(self, split):
            if split == "test":
                raise AssertionError("the candidate space read the test split")
            return real(self, split)

        monkeypatch.setattr(Workspace, "interactions", guarded)
        assert _all_spaces(ws.root, settings) == before
    finally:
        test_file.write_text(original)


def test_candidate_item_is_frozen(built):  # noqa: F811
    ws, settings, _ = built
    space = CandidateSpace.load(ws, settings)
    us = space.for_user(space.users()[0])
    c = next(iter(us.candidates.values()))[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.score = 1.0


def test_candidates_setting_bounds_the_space(built):  # noqa: F811
    ws, _, _ = built
    small = retrieval_settings("retrieval.candidates=3")
    space = CandidateSpace.load(ws, small)
    for u in space.users()[:10]:
        us = space.for_user(u)
        assert sum(len(c) for c in us.candidates.values()) == 3
