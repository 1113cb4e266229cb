"""Tie-safe full-list ranking metrics: Recall@K, NDCG@K, MRR, per user.

**Ties are pessimistic.** An item is ranked after every item with a strictly higher score and after every
*non-relevant* item with the same score. Tied relevant items fill the last slots of their tie block, so a
constant scorer gets the worst possible metrics. The result never depends on where a relevant item sits in
the candidate list: scores decide, column order does not. That is the failure behind pmixer/SASRec.pytorch
#43, where the ground truth assumed index 0 and moving it changed NDCG.

Per user (``n_pos`` = that user's relevant items in the split, including those missing from the list):

* ``recall@K = hits@K / n_pos``
* ``ndcg@K = DCG@K / IDCG@K`` with binary gains, ``1 / log2(rank + 2)`` for 0-based ranks, and
  ``IDCG@K = sum_{j < min(n_pos, K)} 1 / log2(j + 2)``
* ``mrr = 1 / (rank_first_relevant + 1)``, and 0 when no relevant item is in the list.

Users with ``n_pos == 0`` get NaN and are left out of the averages. The averages are taken over users with
at least one positive in the split.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pessimistic_ranks(scores: np.ndarray, relevant: np.ndarray, chunk: int = 512
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(row, 0-based rank) of every relevant entry of ``scores`` ``[B, M]`` (NaN counts as -inf)."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    rows, cols = np.nonzero(relevant)
    ranks = np.zeros(len(rows), dtype=np.int64)
    positions = np.arange(scores.shape[1])
    for start in range(0, len(rows), chunk):
        r, c = rows[start:start + chunk], cols[start:start + chunk]
        row_scores, row_rel = scores[r], relevant[r]
        s = scores[r, c][:, None]
        tied = row_scores == s
        ranks[start:start + chunk] = ((row_scores > s).sum(1) + (tied & ~row_rel).sum(1)
                                      + (tied & row_rel & (positions[None, :] < c[:, None])).sum(1))
    return rows, ranks


def idcg(n_pos: np.ndarray, k: int) -> np.ndarray:
    discounts = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2))])
    return discounts[np.minimum(n_pos, k)]


def user_metrics(scores: np.ndarray, relevant: np.ndarray, n_pos: np.ndarray, ks: Sequence[int]
                 ) -> dict[str, np.ndarray]:
    """Per-user metrics of one batch: ``relevant`` ``[B, M]`` marks relevant entries (padding must not be
    relevant); ``n_pos`` ``[B]`` counts each user's relevant items, listed or not."""
    b = len(scores)
    n_pos = np.asarray(n_pos, dtype=np.int64)
    if (relevant.sum(1) > n_pos).any():
        raise ValueError("more relevant entries in a row than that user's n_pos")
    rows, ranks = pessimistic_ranks(scores, relevant)
    has = n_pos > 0
    denom = np.where(has, n_pos, 1).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    gain = 1.0 / np.log2(ranks + 2.0)
    for k in ks:
        top = ranks < k
        hits = np.bincount(rows, weights=top, minlength=b)
        dcg = np.bincount(rows, weights=gain * top, minlength=b)
        out[f"recall@{k}"] = np.where(has, hits / denom, np.nan)
        out[f"ndcg@{k}"] = np.where(has, dcg / np.where(has, idcg(n_pos, k), 1.0), np.nan)
    best = np.full(b, np.inf)
    np.minimum.at(best, rows, ranks.astype(np.float64))
    out["mrr"] = np.where(has, np.where(np.isfinite(best), 1.0 / (best + 1.0), 0.0), np.nan)
    listed = np.bincount(rows, minlength=b).astype(np.float64)
    out["cand_recall"] = np.where(has, listed / denom, np.nan)
    return out


def average(per_user: dict[str, list[np.ndarray]]) -> dict[str, float | None]:
    """Mean over users with >= 1 positive (non-NaN); None when there is no such user."""
    out: dict[str, float | None] = {}
    for name, parts in per_user.items():
        values = np.concatenate(parts) if parts else np.zeros(0)
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if len(values) else None
    return out
