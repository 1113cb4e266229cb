"""Full-ranking evaluation over Two-Tower candidates, split cold / warm / all. No sampled negatives anywhere.

For each evaluated user (training history and >= 1 test positive, see :class:`trainer.dataset.EvalData`):

1. The user's top-M Two-Tower candidates, with training items already removed.
2. The model's scores for those candidates (``sas``), the Two-Tower inner products (``tw``), and a fusion
   chosen by ``rerank_mode``:

   * ``sas``: the model score only.
   * ``tw``: the Two-Tower score only (the Two-Tower-alone baseline; needs no model).
   * ``hybrid``: ``alpha * z(sas) + (1 - alpha) * z(tw)``, where ``z`` is a per-user z-score over that
     user's listed candidates. A z-score is chosen over min-max because one extreme score cannot squash
     all the others. A constant row becomes all zeros, i.e. all tied.

3. Tie-safe metrics (:mod:`trainer.metrics`), computed separately for three splits. **cold**: the relevant
   items are the user's strict cold test positives. **warm**: the other test positives. **all**: every
   test positive. In the cold and warm splits, the user's positives from the other split are taken out of
   the list instead of counting as misses ("filtered" ranking), so a well-placed warm item never pushes a
   cold one down.

Recall@K divides by all of the user's positives in the split, including those the Two-Tower never listed,
so ``cand_recall`` (listed / positives) is the ceiling of every Recall@K. ``cand_recall_pooled`` is the
share of all positives in the split that were listed. It is the retrieval module's recall@M definition
and is reported for the consistency check. The other metrics are means over the users that have >= 1
positive in the split.

``full_catalog_search`` replaces the candidates with every unseen item (``sas`` mode only). Baselines use
it for a catalog-wide view.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from trainer.batches import gather, trim, windows
from trainer.dataset import CandidateSearch, EvalData, TrainingData
from trainer.metrics import average, user_metrics
from trainer.model import SeqModel

SPLITS = ("all", "cold", "warm")


def zscore(x: np.ndarray) -> np.ndarray:
    """Per-row z-score over the finite entries; non-finite entries stay -inf; a constant row becomes 0."""
    finite = np.isfinite(x)
    n = np.maximum(finite.sum(1, keepdims=True), 1)
    vals = np.where(finite, x, 0.0)
    mean = vals.sum(1, keepdims=True) / n
    var = (np.where(finite, x - mean, 0.0) ** 2).sum(1, keepdims=True) / n
    std = np.sqrt(var)
    z = (vals - mean) / np.where(std > 0, std, 1.0)
    return np.where(finite, z, -np.inf)


def fuse(sas: np.ndarray | None, tw: np.ndarray, mode: str, alpha: float) -> np.ndarray:
    if mode == "tw":
        return np.where(np.isfinite(tw), tw, -np.inf).astype(np.float64)
    if sas is None:
        raise ValueError(f"rerank_mode {mode!r} needs a model")
    if mode == "sas":
        return sas.astype(np.float64)
    if mode == "hybrid":
        return alpha * zscore(sas.astype(np.float64)) + (1.0 - alpha) * zscore(tw.astype(np.float64))
    raise ValueError(f"unknown rerank_mode {mode!r}")


def full_catalog_search(td: TrainingData) -> CandidateSearch:
    """Every item the user has not seen in training, with a zero Two-Tower score (use with ``sas``)."""
    def search(users: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.tile(np.arange(td.n_items, dtype=np.int64), (len(users), 1))
        owner, items = gather(td.seen, users)
        ids[owner, items] = -1
        return ids, np.zeros(ids.shape, dtype=np.float32)
    return search


@torch.no_grad()
def model_scores(model: SeqModel, tokens: np.ndarray) -> np.ndarray:
    """``[B, n_items]`` scores over the catalog for left-padded histories."""
    h = model.last_hidden(torch.as_tensor(trim(tokens), dtype=torch.long))
    return model.score_all(h).numpy()


def evaluate(model: SeqModel | None, td: TrainingData, ev: EvalData, *, mode: str = "hybrid",
             alpha: float = 0.5, ks: Sequence[int] = (5, 10, 20), max_len: int = 50, batch: int = 512,
             search: CandidateSearch | None = None, m: int | None = None, keep_users: bool = False) -> dict:
    """Metrics per split (see the module docstring); ``search``/``m`` override the Two-Tower candidates.
    ``keep_users`` adds ``per_user`` (:func:`subset_metrics` averages it over any group of users later)."""
    started = time.perf_counter()
    search = search or ev.search
    m = m or ev.m
    if mode != "tw" and model is None:
        raise ValueError(f"rerank_mode {mode!r} needs a model")
    if model is not None:
        model.eval()
    per_user: dict[str, dict[str, list[np.ndarray]]] = {s: {} for s in SPLITS}
    pooled = {s: [0, 0] for s in SPLITS}  # listed positives, positives
    seen_users = []
    lengths = td.sequences.lengths[ev.users]
    order = np.argsort(lengths, kind="stable")  # similar lengths per batch: little padding (averages ignore order)
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        users = ev.users[rows]
        seen_users.append(users)
        b = len(users)
        ids, tw = search(users, m)
        valid = ids >= 0
        sas = None
        if mode != "tw":
            all_scores = model_scores(model, windows(td.sequences, users, max_len))
            sas = np.where(valid, np.take_along_axis(all_scores, np.clip(ids, 0, None), axis=1), -np.inf)
        scores = np.where(valid, fuse(sas, tw, mode, alpha), -np.inf)
        owner, items = gather(ev.positives, rows)
        code = np.zeros((b, td.n_items), dtype=np.int8)  # 1 warm positive, 2 cold positive
        code[owner, items] = np.where(td.cold[items], 2, 1)
        listed = np.where(valid, code[np.arange(b)[:, None], np.clip(ids, 0, None)], 0)
        for split in SPLITS:
            in_split = {"all": listed > 0, "cold": listed == 2, "warm": listed == 1}[split]
            pos_mask = {"all": np.ones(len(items), bool), "cold": td.cold[items], "warm": ~td.cold[items]}[split]
            n_pos = np.bincount(owner[pos_mask], minlength=b)
            split_scores = np.where((listed > 0) & ~in_split, -np.inf, scores)
            for name, values in user_metrics(split_scores, in_split, n_pos, ks).items():
                per_user[split].setdefault(name, []).append(values)
            pooled[split][0] += int(in_split.sum())
            pooled[split][1] += int(n_pos.sum())
    out: dict = {"mode": mode, "m": int(m), "users": {}, "positives": {}, "metrics": {}}
    for split in SPLITS:
        metrics = average(per_user[split])
        metrics["cand_recall_pooled"] = pooled[split][0] / pooled[split][1] if pooled[split][1] else None
        out["metrics"][split] = metrics
        parts = per_user[split].get("mrr", [])
        out["users"][split] = int(sum((~np.isnan(p)).sum() for p in parts))
        out["positives"][split] = pooled[split][1]
    out["seconds"] = round(time.perf_counter() - started, 3)
    if keep_users:
        out["per_user"] = {"users": np.concatenate(seen_users) if seen_users else np.zeros(0, dtype=np.int64),
                           **{f"{split}/{name}": np.concatenate(parts) for split in SPLITS
                              for name, parts in per_user[split].items()}}
    return out


def subset_metrics(per_user: dict[str, np.ndarray], users: np.ndarray) -> dict[str, dict[str, float | None]]:
    """``{split: {metric: mean}}`` of an evaluation's ``per_user`` arrays over the evaluated users in ``users``
    (e.g. the users a labeling run labeled); users without a positive in a split are left out, as in
    :func:`evaluate`, and ``users`` per split says how many counted."""
    keep = np.isin(per_user["users"], np.asarray(users, dtype=np.int64))
    out: dict[str, dict[str, float | None]] = {}
    for key, values in per_user.items():
        if "/" not in key:
            continue
        split, name = key.split("/", 1)
        vals = values[keep]
        vals = vals[~np.isnan(vals)]
        out.setdefault(split, {})[name] = float(vals.mean()) if len(vals) else None
        if name == "mrr":
            out[split]["users"] = int(len(vals))
    return out


def validation_ndcg(model: SeqModel, td: TrainingData, k: int = 10, max_len: int = 50, batch: int = 1024) -> float:
    """Mean NDCG@k of each valid user's held-out last training item, ranked by the model over the whole
    warm catalog minus the user's other training items (cold items are excluded: no validation target can
    be cold). Uses only training data."""
    if not len(td.val_users):
        return 0.0
    order = np.argsort(td.fit.lengths[td.val_users], kind="stable")
    users, targets = td.val_users[order], td.val_targets[order]
    model.eval()
    parts = []
    for start in range(0, len(users), batch):
        u, t = users[start:start + batch], targets[start:start + batch].astype(np.int64)
        rows = np.arange(len(u))
        scores = model_scores(model, windows(td.fit, u, max_len))
        target_scores = scores[rows, t].copy()
        owner, items = gather(td.seen, u)
        scores[owner, items] = -np.inf
        scores[:, td.cold] = -np.inf
        scores[rows, t] = target_scores
        # one relevant item per row: its pessimistic rank is "items above it + other items tied with it"
        # (what trainer.metrics computes for any number, without materialising a [B, items] relevance mask)
        ts = target_scores[:, None]
        rank = (scores > ts).sum(1) + (scores == ts).sum(1) - 1
        parts.append(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0))
    return float(np.concatenate(parts).mean())
