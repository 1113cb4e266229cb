"""Plain containers the trainer works on: ragged per-user arrays, the training data, labels, test targets.

Nothing here reads files or imports project code; :mod:`trainer.data` fills these from a workspace. The test
split never enters :class:`TrainingData`: it lives in :class:`EvalData`, which only evaluation reads.

Validation slice (for early stopping, inside the training period): every *valid* user (>= 2 training
positives) has the last item of their training sequence held out as a validation target; the model is fitted
on the remaining prefix (``fit``). A user with exactly two training items therefore contributes one
validation pair and no fitting pair. Test interactions are never used for validation.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

MIN_HISTORY = 2  # a sequence user needs one prefix item and one target (thesis §4.3.5)


@dataclass(frozen=True)
class Ragged:
    """Rows of different lengths in one flat array: row ``u`` is ``values[ptr[u]:ptr[u + 1]]``."""

    values: np.ndarray
    ptr: np.ndarray

    @classmethod
    def from_rows(cls, rows: Mapping[int, Sequence[int]] | Sequence[Sequence[int]], n_rows: int,
                  dtype=np.int64) -> Ragged:
        def get(u: int):
            row = rows.get(u) if isinstance(rows, Mapping) else (rows[u] if u < len(rows) else None)
            return np.asarray(() if row is None else row, dtype=dtype)

        parts = [get(u) for u in range(n_rows)]
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        ptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        return cls(values.astype(dtype, copy=False), ptr)

    @property
    def n_rows(self) -> int:
        return len(self.ptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.ptr)

    def row(self, u: int) -> np.ndarray:
        return self.values[self.ptr[u]:self.ptr[u + 1]]

    def row_ids(self) -> np.ndarray:
        """The row of every value (``len(values)``), for vectorised scatters."""
        return np.repeat(np.arange(self.n_rows), self.lengths)

    def drop_last(self, rows: np.ndarray) -> Ragged:
        """The same rows with the last value of each row in ``rows`` removed."""
        keep = np.ones(len(self.values), dtype=bool)
        rows = np.asarray(rows, dtype=np.int64)
        keep[self.ptr[rows + 1][self.lengths[rows] > 0] - 1] = False
        lengths = self.lengths.copy()
        lengths[rows] = np.maximum(lengths[rows] - 1, 0)
        ptr = np.zeros_like(self.ptr)
        np.cumsum(lengths, out=ptr[1:])
        return Ragged(self.values[keep], ptr)

    def digest(self) -> str:
        return hashlib.sha256(self.values.tobytes() + self.ptr.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainingData:
    """Everything training needs, as arrays (no test data).

    * ``sequences``: time-ordered training positives per user (all users, empty rows allowed).
    * ``seen``: every training item per user, any weight (never a negative, never a candidate).
    * ``cold``: ``[n_items]`` bool, strict cold items (in test, never in train); never sampled as negatives.
    * ``valid_users``: users with >= 2 training positives (the only users labels may refer to).
    * ``neg_pool``: per user, Two-Tower candidates minus seen and cold items, best first.
    * ``fit``: ``sequences`` with each valid user's last item removed; ``val_users`` / ``val_targets`` hold
      those removed items (the validation slice, see the module docstring).
    """

    n_users: int
    n_items: int
    sequences: Ragged
    seen: Ragged
    cold: np.ndarray
    neg_pool: Ragged
    fingerprint: str = ""
    valid_users: np.ndarray = field(init=False)
    fit: Ragged = field(init=False)
    val_users: np.ndarray = field(init=False)
    val_targets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        lengths = self.sequences.lengths
        valid = np.flatnonzero(lengths >= MIN_HISTORY)
        object.__setattr__(self, "valid_users", valid)
        object.__setattr__(self, "fit", self.sequences.drop_last(valid))
        object.__setattr__(self, "val_users", valid)
        object.__setattr__(self, "val_targets", self.sequences.values[self.sequences.ptr[valid + 1] - 1])

    @property
    def warm_items(self) -> np.ndarray:
        return np.flatnonzero(~self.cold)


def make_training_data(n_users: int, n_items: int, sequences: Mapping[int, Sequence[int]],
                       seen: Mapping[int, Sequence[int]], cold: Sequence[int],
                       candidates: Mapping[int, Sequence[int]] | None = None, fingerprint: str = "") -> TrainingData:
    """Build :class:`TrainingData` from plain dicts; ``candidates`` (Two-Tower, best first) become the
    negative pool after removing each user's seen items and every cold item."""
    cold_mask = np.zeros(n_items, dtype=bool)
    cold_mask[np.asarray(list(cold), dtype=np.int64)] = True
    seen_rows = {u: np.unique(np.asarray(s, dtype=np.int64)) for u, s in seen.items()}
    pool: dict[int, np.ndarray] = {}
    for u, cand in (candidates or {}).items():
        cand = np.asarray(cand, dtype=np.int64)
        cand = cand[cand >= 0]
        cand = cand[~cold_mask[cand]]
        pool[u] = cand[~np.isin(cand, seen_rows.get(u, ()))]
    return TrainingData(n_users, n_items, Ragged.from_rows(sequences, n_users), Ragged.from_rows(seen_rows, n_users),
                        cold_mask, Ragged.from_rows(pool, n_users, dtype=np.int32), fingerprint)


# ---- labels ----------------------------------------------------------------------------------------

EDGE_REASONS = ("kept", "unknown_user", "short_history", "unknown_item", "bad_weight")
TRIPLET_REASONS = ("kept", "unknown_user", "short_history", "unknown_item", "same_item", "bad_weight")


@dataclass(frozen=True)
class Labels:
    """LLM labels in index space, already filtered: pseudo edges (u, i, w) and triplets (u, pos, neg, w).

    ``counts`` says how many rows were read, kept and dropped for which reason (see :func:`filter_labels`).
    """

    edge_users: np.ndarray
    edge_items: np.ndarray
    edge_weights: np.ndarray
    trip_users: np.ndarray
    trip_pos: np.ndarray
    trip_neg: np.ndarray
    trip_weights: np.ndarray
    source: str = ""
    counts: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, source: str = "none") -> Labels:
        i, f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return cls(i, i, f, i, i, i, f, source, {})

    @property
    def n_edges(self) -> int:
        return len(self.edge_users)

    @property
    def n_triplets(self) -> int:
        return len(self.trip_users)

    def digest(self) -> str:
        h = hashlib.sha256()
        for arr in (self.edge_users, self.edge_items, self.edge_weights, self.trip_users, self.trip_pos,
                    self.trip_neg, self.trip_weights):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]


def _reasons(users: np.ndarray, item_cols: Sequence[np.ndarray], weights: np.ndarray, n_users: int,
             n_items: int, history: np.ndarray) -> np.ndarray:
    """Per row, the first failed check as an index into the reason tuple (0 = kept)."""
    reason = np.zeros(len(users), dtype=np.int64)

    def mark(bad: np.ndarray, code: int) -> None:
        reason[(reason == 0) & bad] = code

    known = (users >= 0) & (users < n_users)
    mark(~known, 1)
    mark(known & (history[np.where(known, users, 0)] < MIN_HISTORY), 2)
    for col in item_cols:
        mark((col < 0) | (col >= n_items), 3)
    return reason


def filter_labels(td: TrainingData, edges: Mapping[str, np.ndarray], triplets: Mapping[str, np.ndarray],
                  source: str = "") -> Labels:
    """Keep a label only when its user is a valid sequence user and every item index exists.

    ``edges``: arrays ``user``, ``item``, ``weight`` (and optionally ``from_fallback``); ``triplets``: ``user``,
    ``pos``, ``neg``, ``weight``. Unknown ids must already be -1. Dropped rows are counted by the first
    reason that applies, in this order: unknown_user, short_history (< 2 training items), unknown_item,
    same_item (triplet pos == neg), bad_weight (not finite or <= 0).
    """
    history = td.sequences.lengths
    counts: dict[str, dict[str, int]] = {}

    def run(kind: str, cols: dict, item_keys: tuple[str, ...], reasons: tuple[str, ...]) -> np.ndarray:
        users = np.asarray(cols.get("user", ()), dtype=np.int64)
        items = [np.asarray(cols.get(k, ()), dtype=np.int64) for k in item_keys]
        weights = np.asarray(cols.get("weight", ()), dtype=np.float64)
        code = _reasons(users, items, weights, td.n_users, td.n_items, history)
        if "same_item" in reasons:
            code[(code == 0) & (items[0] == items[1])] = reasons.index("same_item")
        code[(code == 0) & ~(np.isfinite(weights) & (weights > 0))] = reasons.index("bad_weight")
        counts[kind] = {"read": len(users), **{r: int((code == i).sum()) for i, r in enumerate(reasons)}}
        keep = code == 0
        if "from_fallback" in cols:
            counts[kind]["kept_from_fallback"] = int(np.asarray(cols["from_fallback"], dtype=bool)[keep].sum())
        return keep

    ke = run("edges", dict(edges), ("item",), EDGE_REASONS)
    kt = run("triplets", dict(triplets), ("pos", "neg"), TRIPLET_REASONS)

    def col(cols: Mapping, key: str, keep: np.ndarray, dtype) -> np.ndarray:
        return np.asarray(cols.get(key, ()), dtype=dtype)[keep] if len(keep) else np.zeros(0, dtype=dtype)

    return Labels(col(edges, "user", ke, np.int64), col(edges, "item", ke, np.int64),
                  col(edges, "weight", ke, np.float32), col(triplets, "user", kt, np.int64),
                  col(triplets, "pos", kt, np.int64), col(triplets, "neg", kt, np.int64),
                  col(triplets, "weight", kt, np.float32), source, counts)


# ---- test targets (evaluation only) -----------------------------------------------------------------

# (user_idxs [B], m) -> (item ids [B, m] -1 padded, Two-Tower scores [B, m]); seen items already removed.
CandidateSearch = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class EvalData:
    """Test positives of the evaluated users and the Two-Tower candidate search.

    ``users``: users with a training history and >= 1 test positive (weight > 0, not among their training
    items). ``positives``: one row per entry of ``users`` (unique items); which of them are cold is
    ``TrainingData.cold`` (the workspace's one strict definition). ``skipped`` counts test positives left
    out and why.
    """

    users: np.ndarray
    positives: Ragged
    search: CandidateSearch
    m: int
    skipped: dict = field(default_factory=dict)
