"""Final ranking -> pseudo edges and triplets (thesis §4.3.3).

The stage-5 ranking (or its fallback) becomes tuples ``(asin, score, keywords, subcat)``; then

* **pseudo edges** ``(user, item, weight)``: items with ``score >= min_score``, ``weight = score /
  score_scale`` (x ``fallback_weight`` when the ranking came from a fallback: weak, not dropped);
* **triplets** ``(user, pos, neg, weight)``, at most ``max_triplets`` per user, chosen in this order:
  1. adjacent ranked pairs whose scores differ (hard negatives), weight = gap / score_scale;
  2. head-vs-tail pairs, farthest apart first, whose scores differ (easier constraints), same weight;
  3. only when *all* scores tie: ranking position as a weak signal, earlier = positive,
     weight = ``TIE_WEIGHT_STEPS / score_scale`` (half a score step).
  The positive is always the higher-scored item (a model that ranks a 3 above a 5 contradicted itself;
  its score is the explicit judgement). ``pos != neg`` always; the output is deterministic.

**Flagged items** (catalog text that reads like an instruction to a model, found by ``data prepare``) follow
``labeler.flagged_items``: ``keep``; ``downweight`` (every edge on a flagged item and every triplet with
one in it is multiplied by ``flagged_weight``: the model's judgement of such an item, and of what it was
compared with, may be the seller's); ``drop`` (flagged items leave the ranking before any label is made).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Collection, Iterable, Literal, Mapping, Sequence

TIE_WEIGHT_STEPS = 0.5
FlagPolicy = Literal["keep", "downweight", "drop"]


@dataclass(frozen=True)
class RankedItem:
    asin: str
    score: float
    keywords: tuple[str, ...] = ()
    subcat: str = ""


@dataclass(frozen=True)
class PseudoEdge:
    user: str
    item: str
    weight: float


@dataclass(frozen=True)
class PreferencePair:
    """A triplet by item id: ``user`` prefers ``pos`` over ``neg`` (``store.Triplet`` is its stored form)."""
    user: str
    pos: str
    neg: str
    weight: float


@dataclass
class Labels:
    edges: list[PseudoEdge]
    triplets: list[PreferencePair]


def to_ranking(values: Sequence[str], scores: Mapping[str, float], *, subcat_of: Mapping[str, str] | None = None,
               keywords: Iterable[str] = ()) -> list[RankedItem]:
    """Stage-5 output (ordered ids + scores) as ranking tuples; the user's profile keywords go on each."""
    kw = tuple(keywords)
    subcat_of = subcat_of or {}
    return [RankedItem(v, float(scores[v]), kw, subcat_of.get(v, "")) for v in values]


def _dedupe(ranking: Sequence[RankedItem]) -> list[RankedItem]:
    seen: set[str] = set()
    out = []
    for item in ranking:
        if item.asin not in seen:
            seen.add(item.asin)
            out.append(item)
    return out


def pseudo_edges(user: str, ranking: Sequence[RankedItem], *, min_score: float, score_scale: float,
                 fallback: bool = False, fallback_weight: float = 0.1) -> list[PseudoEdge]:
    factor = fallback_weight if fallback else 1.0
    return [PseudoEdge(user, it.asin, min(1.0, max(0.0, it.score / score_scale)) * factor)
            for it in _dedupe(ranking) if it.score >= min_score]


def triplets(user: str, ranking: Sequence[RankedItem], *, max_triplets: int, score_scale: float,
             fallback: bool = False, fallback_weight: float = 0.1) -> list[PreferencePair]:
    items = _dedupe(ranking)
    n = len(items)
    factor = fallback_weight if fallback else 1.0
    out: list[PreferencePair] = []
    used: set[frozenset[str]] = set()

    def add(i: int, j: int, weight: float) -> None:
        a, b = items[i], items[j]
        pos, neg = (a, b) if a.score >= b.score else (b, a)
        pair = frozenset((a.asin, b.asin))
        if len(out) < max_triplets and pair not in used:
            used.add(pair)
            out.append(PreferencePair(user, pos.asin, neg.asin, weight * factor))

    def gap(i: int, j: int) -> float:
        return abs(items[i].score - items[j].score)

    if n < 2 or max_triplets <= 0:
        return out
    for i in range(n - 1):                       # 1. adjacent pairs with a score gap
        if gap(i, i + 1) > 0:
            add(i, i + 1, gap(i, i + 1) / score_scale)
    for d in range(n - 1, 1, -1):                # 2. head vs tail, farthest apart first
        for i in range(n - d):
            if gap(i, i + d) > 0:
                add(i, i + d, gap(i, i + d) / score_scale)
    if all(it.score == items[0].score for it in items):   # 3. all tie: position as a weak signal
        for d in range(n - 1, 0, -1):
            for i in range(n - d):
                add(i, i + d, TIE_WEIGHT_STEPS / score_scale)
    return out


def extract(user: str, ranking: Sequence[RankedItem], *, min_score: float, score_scale: float,
            max_triplets: int, fallback: bool = False, fallback_weight: float = 0.1,
            flagged: Collection[str] = (), flagged_policy: FlagPolicy = "keep", flagged_weight: float = 1.0) -> Labels:
    """Both label kinds for one user; pass ``LabelerSettings`` values (min_score, score_scale, ...).
    ``flagged``: ids of flagged items, treated by ``flagged_policy`` (module docstring)."""
    if flagged_policy == "drop":
        ranking = [it for it in ranking if it.asin not in flagged]
    opts = dict(score_scale=score_scale, fallback=fallback, fallback_weight=fallback_weight)
    edges = pseudo_edges(user, ranking, min_score=min_score, **opts)
    pairs = triplets(user, ranking, max_triplets=max_triplets, **opts)
    if flagged_policy == "downweight" and flagged:
        edges = [replace(e, weight=e.weight * flagged_weight) if e.item in flagged else e for e in edges]
        pairs = [replace(t, weight=t.weight * flagged_weight) if {t.pos, t.neg} & set(flagged) else t for t in pairs]
    return Labels(edges, pairs)
