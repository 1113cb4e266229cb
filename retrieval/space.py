"""The candidate space the labeler works in: one :class:`UserSpace` per user (thesis §4.1-4.2, §4.3.4).

A user's space is their top-M unseen Two-Tower candidates, grouped by the explicit taxonomy: the stage-2
categories and stage-3 subcategories that hold at least one candidate, and per subcategory up to
``labeler.max_candidates_per_subcategory`` candidates in score order, each with similar-item evidence.
Categories and subcategories are listed in order of their best candidate, so the most relevant come first.

It is built only from the catalog, the training split and the retrieval artefacts. It never opens the test
split, so nothing a labeler sees can leak the items a user will buy (a test checks this by emptying the
test file and rebuilding).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from coldlabel.data.workspace import Item, Workspace
from retrieval import artefacts
from retrieval.evidence import Evidence
from retrieval.index import CandidateIndex


@dataclass(frozen=True)
class CandidateItem:
    item_idx: int
    asin: str
    title: str
    category_path: tuple[str, ...]
    subcategory: str
    score: float
    _evidence: Evidence | None = field(default=None, compare=False, repr=False)
    flagged: str = ""  # why the item's text reads like an instruction to a model ("" = it does not)
    brand: str = ""

    @property
    def evidence(self) -> tuple[str, ...]:
        """Similar-item snippets, computed on first use: a user has ~2,000 candidates but a labeler shows
        only the chosen subcategories' (prefetch those with ``CandidateSpace.evidence.prefetch``)."""
        return self._evidence.for_item(self.item_idx) if self._evidence is not None else ()

    @property
    def similar(self) -> tuple[Item, ...]:
        """The same evidence as catalog items, so a prompt can tell which of them it already shows."""
        if self._evidence is None:
            return ()
        return tuple(self._evidence.items[j] for j in self._evidence.neighbours(self.item_idx))


@dataclass(frozen=True)
class UserSpace:
    user_idx: int
    user_id: str
    history: tuple[Item, ...]                          # last `labeler.history_items` training items, oldest first
    categories: tuple[str, ...]                        # stage-2 categories holding >= 1 candidate
    subcategories: dict[str, tuple[str, ...]]          # category -> subcategory ids holding >= 1 candidate
    candidates: dict[str, tuple[CandidateItem, ...]]   # subcategory id -> candidates, Two-Tower score order
    interest_leaves: tuple[str, ...]                   # leaf ids of the user's recent items (first-seen order)


class CandidateSpace:
    def __init__(self, ws: Workspace, settings, index, evidence, taxonomy: dict, user_leaves: dict[str, list[str]],
                 leaves: dict[str, dict]):
        self.ws = ws
        self.settings = settings
        self.index = index
        self.evidence = evidence
        self.items = ws.items
        self.sequences = ws.sequences
        self.item_subcategory: dict[int, str] = {int(i): s for i, s in taxonomy["item_subcategory"].items()}
        self.sub_category: dict[str, str] = {s: c for c, subs in taxonomy["subcategories"].items() for s in subs}
        self.user_ids: dict[int, str] = ws.user_ids
        self._user_leaves = user_leaves
        self.leaves = leaves  # leaf id -> {"path", "items", "method", "description"}

    @classmethod
    def load(cls, ws: Workspace, settings) -> CandidateSpace:
        """Load the built artefacts; raises ArtefactError (naming the file and the fix) if missing or stale."""
        artefacts.check_current(ws, settings, "index", "leaves")
        index = CandidateIndex.load(ws)
        leaves = artefacts.load_json(ws, "leaves", "leaves.json")
        user_leaves = artefacts.load_json(ws, "leaves", "user_leaves.json")
        r = settings.retrieval
        evidence = Evidence(ws.items, index.item_vectors, r.evidence_k, r.evidence_min_sim, index=index.index)
        return cls(ws, settings, index, evidence, ws.taxonomy, user_leaves,
                   {lf["id"]: lf for lf in leaves["leaves"]})

    def users(self) -> list[int]:
        """Users with at least one training positive: the ones a labeler can profile."""
        return sorted(u for u, seq in self.sequences.items() if seq)

    def leaf_description(self, leaf_id: str) -> str:
        return self.leaves[leaf_id]["description"]

    def for_user(self, user_idx: int) -> UserSpace:
        seq = self.sequences.get(user_idx)
        if not seq:
            raise KeyError(f"user {user_idx} has no training positives, so no candidate space")
        lab = self.settings.labeler
        ids, scores = self.index.search([user_idx], self.settings.retrieval.candidates)
        grouped: dict[str, list[tuple[int, float]]] = {}
        for item, score in zip(ids[0].tolist(), scores[0].tolist()):
            if item < 0:
                break
            sub = self.item_subcategory[item]
            bucket = grouped.setdefault(sub, [])
            if len(bucket) < lab.max_candidates_per_subcategory:
                bucket.append((item, score))

        categories: list[str] = []
        subcategories: dict[str, list[str]] = {}
        candidates: dict[str, tuple[CandidateItem, ...]] = {}
        for sub, bucket in grouped.items():  # dicts keep insertion order = order of each sub's best candidate
            cat = self.sub_category[sub]
            if cat not in subcategories:
                categories.append(cat)
                subcategories[cat] = []
            subcategories[cat].append(sub)
            candidates[sub] = tuple(
                CandidateItem(i, self.items[i].asin, self.items[i].title, self.items[i].category_path, sub,
                              float(s), self.evidence, flagged=self.items[i].flagged, brand=self.items[i].brand)
                for i, s in bucket)
        return UserSpace(
            user_idx=user_idx,
            user_id=self.user_ids[user_idx],
            history=tuple(self.items[i] for i in seq[-lab.history_items:]),
            categories=tuple(categories),
            subcategories={c: tuple(s) for c, s in subcategories.items()},
            candidates=candidates,
            interest_leaves=tuple(self._user_leaves.get(str(user_idx), ())),
        )
