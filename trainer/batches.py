"""Training batches and the negative sampler, vectorised with numpy and seeded through one Generator.

Training examples: **all positions, SASRec style.** Each epoch visits every user with at least two items in
the fitting sequence once, in shuffled order. That user's last ``max_len + 1`` items give ``max_len``
(prefix -> next item) pairs at once, and one causal forward pass scores all of them. This covers the same
pairs as a per-prefix DataLoader of ``(uid, seq, target)`` triples, at about 1/avg-length of the cost. The
only state held is the ragged sequence array (``beauty``: ~125k ints). A user with more than ``max_len + 1``
fitting items keeps only the most recent window, as in SASRec.

Negatives are drawn per user and shared by all positions of that user's window. A user's negatives exclude
everything they have seen in training, so they can never collide with one of that user's targets.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from trainer.dataset import Ragged, TrainingData


def gather(rg: Ragged, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row position in ``rows``, value) of every value in the selected rows, without a Python loop."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = rg.lengths[rows]
    starts = rg.ptr[rows]
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(rows)), lengths)
    offset = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, rg.values[np.repeat(starts, lengths) + offset]


def windows(rg: Ragged, rows: np.ndarray, length: int) -> np.ndarray:
    """``[len(rows), length]`` tokens (item + 1; 0 = padding) of each row's last ``length`` items, left-padded."""
    rows = np.asarray(rows, dtype=np.int64)
    ends = rg.ptr[rows + 1]
    take = np.minimum(rg.lengths[rows], length)
    cols = np.arange(length)
    src = ends[:, None] - length + cols[None, :]
    valid = cols[None, :] >= (length - take)[:, None]
    if not len(rg.values):
        return np.zeros((len(rows), length), dtype=np.int64)
    return np.where(valid, rg.values[np.clip(src, 0, len(rg.values) - 1)].astype(np.int64) + 1, 0)


def trim(tokens: np.ndarray, keep: int = 1) -> np.ndarray:
    """Drop leading columns that are padding in every row (at least ``keep`` columns stay). Positions are
    counted from the right, so this changes no result, only the work done on padding."""
    real = (tokens > 0).any(axis=0)
    first = int(np.argmax(real)) if real.any() else tokens.shape[1] - keep
    return tokens[:, min(first, tokens.shape[1] - keep):]


def history_buckets(rg: Ragged, rows: np.ndarray, length: int,
                    groups: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """The label losses' inputs: each distinct user's last ``length`` items, cut into ``groups`` buckets of
    similar history length and trimmed per bucket.

    A label mini-batch is drawn across all labeled users, so one long history would pad every row of a
    single window to ``length``; bucketing removes that padding (the causal model's last position is the same
    for any amount of left padding). Returns (token arrays per bucket, ``where``): the representation of
    ``rows[j]`` is row ``where[j]`` of the buckets' outputs concatenated.
    """
    rows = np.asarray(rows, dtype=np.int64)
    users, inverse = np.unique(rows, return_inverse=True)
    order = np.argsort(rg.lengths[users], kind="stable")
    users = users[order]
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    buckets = [trim(windows(rg, part, length)) for part in np.array_split(users, min(groups, len(users)))
               if len(part)]
    return buckets, rank[inverse.reshape(-1)]


class LabelDraw:
    """Label mini-batches drawn by user: random labeled users with *all* their edges and triplets, as many
    users as fit in ``cap`` edges and ``cap`` triplets (at least one user).

    Drawing single edges uniformly sends ~``cap`` distinct users through the encoder per step, each with a
    history of up to ``max_len`` items, for a handful of scored items each; drawing whole users covers every
    edge equally often in expectation with several times fewer encodings (a user has ~8 edges at thesis
    caps), and the user's edges and triplets share one representation.
    """

    def __init__(self, edge_users: np.ndarray, trip_users: np.ndarray) -> None:
        self.users = np.unique(np.concatenate([edge_users, trip_users])).astype(np.int64)
        self.edges = self._group(np.asarray(edge_users, dtype=np.int64))
        self.trips = self._group(np.asarray(trip_users, dtype=np.int64))

    def _group(self, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(owners, kind="stable")
        start = np.searchsorted(owners[order], self.users, side="left")
        end = np.searchsorted(owners[order], self.users, side="right")
        return order, start, end - start

    def draw(self, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(edge indices, triplet indices) of the users drawn for one step."""
        if not len(self.users):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        perm = rng.permutation(len(self.users))
        fits = (np.cumsum(self.edges[2][perm]) <= cap) & (np.cumsum(self.trips[2][perm]) <= cap)
        take = perm[:max(1, int(np.argmin(fits)) if not fits.all() else len(perm))]
        return self._rows(self.edges, take), self._rows(self.trips, take)

    @staticmethod
    def _rows(group: tuple[np.ndarray, np.ndarray, np.ndarray], take: np.ndarray) -> np.ndarray:
        order, start, count = group
        n = count[take]
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        return order[np.repeat(start[take], n) + offset]


def cold_in_batch_negatives(users: np.ndarray, items: np.ndarray, k: int, rng: np.random.Generator,
                            cold: np.ndarray, edge_keys: np.ndarray, n_items: int) -> np.ndarray:
    """``[S, k]`` extra negatives for a mini-batch of pseudo edges ``(users[j], items[j])``: cold items that
    other rows of the batch label, drawn with replacement (so in proportion to how often the run labels
    them), -1 where the draw is warm or an item this user has an edge to (``edge_keys``: sorted
    ``user * n_items + item`` of every edge).

    The thesis draws L_sim's negatives from warm items only, so a cold item is never pushed *down* for
    anyone: whatever the labels say, its embedding drifts toward every labeled user at once. Competing
    against the cold items labeled for others, it must rise for its own users more than for the rest.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if len(items) < 2 or k == 0:
        return np.full((len(items), k), -1, dtype=np.int64)
    cand = items[rng.integers(0, len(items), size=(len(items), k))]
    keys = users[:, None] * n_items + cand
    pos = np.clip(np.searchsorted(edge_keys, keys), 0, max(len(edge_keys) - 1, 0))
    own = edge_keys[pos] == keys if len(edge_keys) else np.zeros(keys.shape, dtype=bool)
    return np.where(cold[cand] & ~own, cand, -1)


def user_batches(users: np.ndarray, batch_size: int, rng: np.random.Generator, lengths: np.ndarray | None = None,
                 pool: int = 16) -> Iterator[np.ndarray]:
    """One epoch of users in chunks of ``batch_size``, shuffled by ``rng``.

    With ``lengths`` (per user index): bucketed shuffling. The shuffled users are cut into pools of
    ``pool`` batches, each pool is sorted by length and cut into batches, and the order of all batches is
    shuffled. Every user is still visited exactly once per epoch in random company, but a batch holds
    similar lengths, so trimmed windows carry little padding (~4x less work on short-history data).
    """
    order = rng.permutation(np.asarray(users, dtype=np.int64))
    if lengths is None:
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]
        return
    batches = []
    span = batch_size * pool
    for start in range(0, len(order), span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    for b in rng.permutation(len(batches)):
        yield batches[b]


def fitting_users(td: TrainingData) -> np.ndarray:
    """Users with at least one (prefix, next item) pair in the fitting sequences."""
    return np.flatnonzero(td.fit.lengths >= 2)


class NegativeSampler:
    """Per row, ``k`` negatives for a user: first a uniform draw without replacement from the user's
    Two-Tower pool (candidates minus seen minus cold), then, if that pool is too small, a uniform draw
    without replacement from the remaining non-seen, non-cold items. A slot that cannot be filled (a user who
    has seen every warm item) is -1 and is masked out of the loss.

    ``exclude`` (one item per row, -1 = none) is kept out of that row's negatives as well. It is the positive
    of a pseudo edge, which may sit in the user's Two-Tower pool.
    """

    def __init__(self, td: TrainingData) -> None:
        self.td = td
        self.n_items = td.n_items

    def sample(self, users: np.ndarray, k: int, rng: np.random.Generator,
               exclude: np.ndarray | None = None) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        b = len(users)
        out = np.full((b, k), -1, dtype=np.int64)
        if b == 0 or k == 0:
            return out
        pool = self.td.neg_pool
        plen = pool.lengths[users]
        width = int(plen.max()) if b else 0
        if width:
            cols = np.arange(width)
            ok = cols[None, :] < plen[:, None]
            src = np.clip(pool.ptr[users][:, None] + cols[None, :], 0, max(len(pool.values) - 1, 0))
            ids = np.where(ok, pool.values[src], -1).astype(np.int64)
            if exclude is not None:
                ok &= ids != np.asarray(exclude)[:, None]
            keys = np.where(ok, rng.random((b, width)), np.inf)
            take = min(k, width)
            order = np.argsort(keys, axis=1, kind="stable")[:, :take]
            picked = np.take_along_axis(ids, order, axis=1)
            out[:, :take] = np.where(np.take_along_axis(ok, order, axis=1), picked, -1)
        short = np.flatnonzero((out < 0).any(axis=1))
        if len(short):
            self._top_up(users[short], out, short, rng, exclude)
        return out

    def _top_up(self, users: np.ndarray, out: np.ndarray, rows: np.ndarray, rng: np.random.Generator,
                exclude: np.ndarray | None) -> None:
        blocked = np.zeros((len(rows), self.n_items), dtype=bool)
        blocked[:, self.td.cold] = True
        owner, items = gather(self.td.seen, users)
        blocked[owner, items] = True
        have = out[rows]
        r, c = np.nonzero(have >= 0)
        blocked[r, have[r, c]] = True
        if exclude is not None:
            ex = np.asarray(exclude)[rows]
            blocked[np.flatnonzero(ex >= 0), ex[ex >= 0]] = True
        keys = np.where(blocked, np.inf, rng.random(blocked.shape))
        need = (have < 0).sum(axis=1)
        width = int(need.max())
        order = np.argsort(keys, axis=1, kind="stable")[:, :width]
        fresh = np.where(np.take_along_axis(keys, order, axis=1) < np.inf, order, -1)
        n_have = (have >= 0).sum(axis=1)
        for j in range(width):  # a loop over slots (<= k), not over examples
            fill = j < need
            out[rows[fill], n_have[fill] + j] = fresh[fill, j]
