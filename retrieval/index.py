"""FAISS top-M candidates per user and candidate recall@M (thesis §4.1, last paragraph).

Candidates come from an exact inner-product index (``IndexFlatIP``) over the exported Two-Tower item
vectors, queried with the user vectors; items the user already has in the *training* split are filtered out.
Recall@M is an evaluation and the only place in this package that reads the test split.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import faiss
import numpy as np

from coldlabel.config import Settings
from coldlabel.data.workspace import Workspace
from retrieval import artefacts

DEFAULT_RECALL_MS = (50, 200, 500, 1000, 2000)


SMALL_SEARCH = 256  # queries: below this a search runs on the calling thread alone (see one_thread_if_small)


@contextmanager
def one_thread_if_small(n_queries: int) -> Iterator[None]:
    """Run a FAISS search of few queries on this thread only. A labeler searches one user (1 query) and one
    list's evidence (<= 80 queries) at a time, from many threads at once; an OpenMP team per such call
    oversubscribes the cores and its threads spin between calls: for_user + evidence took 5.7-10 ms CPU per
    user with the default 2 threads and 1.8 ms with one (``small`` preset). OpenMP's thread count is a
    per-thread setting, so the calling thread's is restored after and no other search is affected."""
    if n_queries >= SMALL_SEARCH:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def flat_index(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def seen_items(ws: Workspace) -> dict[int, np.ndarray]:
    """Every item of each user's training rows (any weight: a low-rated purchase is still 'seen')."""
    return {u: np.fromiter(s, dtype=np.int64, count=len(s)) for u, s in ws.seen.items()}


def _filter_rows(ids: np.ndarray, scores: np.ndarray, seen: Sequence[np.ndarray], m: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    out_ids = np.full((len(ids), m), -1, dtype=np.int64)
    out_scores = np.full((len(ids), m), -np.inf, dtype=np.float32)
    for r in range(len(ids)):
        keep = ids[r] >= 0
        if len(seen[r]):
            keep &= ~np.isin(ids[r], seen[r])
        row_ids, row_scores = ids[r][keep][:m], scores[r][keep][:m]
        out_ids[r, :len(row_ids)] = row_ids
        out_scores[r, :len(row_ids)] = row_scores
    return out_ids, out_scores


def search_filtered(index, queries: np.ndarray, seen: Sequence[np.ndarray], m: int, batch: int = 1024
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top-``m`` per query row after removing that row's ``seen`` items; -1 / -inf pad short rows."""
    n_items = index.ntotal
    ids_out = np.full((len(queries), m), -1, dtype=np.int64)
    scores_out = np.full((len(queries), m), -np.inf, dtype=np.float32)
    for start in range(0, len(queries), batch):
        q = np.ascontiguousarray(queries[start:start + batch], dtype=np.float32)
        s = seen[start:start + batch]
        k = min(n_items, m + max((len(x) for x in s), default=0))
        if k == 0:
            continue
        with one_thread_if_small(len(q)):
            scores, ids = index.search(q, k)
        ids_out[start:start + len(q)], scores_out[start:start + len(q)] = _filter_rows(ids, scores, s, m)
    return ids_out, scores_out


@dataclass
class CandidateIndex:
    """Two-Tower vectors + FAISS index + training seen-sets: everything a candidate query needs."""

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    seen: dict[int, np.ndarray]
    index: object = None

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = flat_index(self.item_vectors)
        self._empty = np.zeros(0, dtype=np.int64)
        self._has_vector = np.linalg.norm(self.user_vectors, axis=1) > 0

    @classmethod
    def load(cls, ws: Workspace, settings: Settings | None = None) -> CandidateIndex:
        """Load the Two-Tower vectors and index; with ``settings``, first check they are current."""
        if settings is not None:
            artefacts.check_current(ws, settings, "index")
        users, items = artefacts.load_tower_vectors(ws)
        return cls(users, items, seen_items(ws), artefacts.load_faiss_index(ws, items))

    def search(self, user_idxs: Iterable[int], m: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each ``[len(users), m]``; users without a vector (no training history) get -1 rows."""
        users = np.asarray(list(user_idxs), dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= len(self.user_vectors)):
            raise IndexError(f"user index out of range 0..{len(self.user_vectors) - 1}")
        ids = np.full((len(users), m), -1, dtype=np.int64)
        scores = np.full((len(users), m), -np.inf, dtype=np.float32)
        rows = np.flatnonzero(self._has_vector[users]) if len(users) else np.zeros(0, dtype=np.int64)
        if len(rows):
            got_ids, got_scores = search_filtered(self.index, self.user_vectors[users[rows]],
                                                  [self.seen.get(int(u), self._empty) for u in users[rows]], m)
            ids[rows], scores[rows] = got_ids, got_scores
        return ids, scores


def candidates(ws: Workspace, user_idxs: Iterable[int], m: int, settings=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``m`` unseen Two-Tower candidates for each user: (item ids, scores), padded with -1 / -inf."""
    return CandidateIndex.load(ws, settings).search(user_idxs, m)


# ---- candidate recall@M ---------------------------------------------------------------------------------

Retriever = Callable[[np.ndarray, list[np.ndarray], int], np.ndarray]  # (users, seen, m) -> ids [n, m]


def popularity_retriever(train_counts: np.ndarray) -> Retriever:
    """Most popular training items (by training positives), seen-filtered: the no-personalisation floor."""
    order = np.argsort(-train_counts, kind="stable")

    def run(users: np.ndarray, seen: list[np.ndarray], m: int) -> np.ndarray:
        out = np.full((len(users), m), -1, dtype=np.int64)
        for r, s in enumerate(seen):
            head = order[:m + len(s)]
            head = head[~np.isin(head, s)][:m] if len(s) else head[:m]
            out[r, :len(head)] = head
        return out
    return run


def vector_retriever(user_vectors: np.ndarray, item_vectors: np.ndarray) -> Retriever:
    """Inner-product retrieval over any pair of user/item vector tables (Two-Tower, or MiniLM content)."""
    index = flat_index(item_vectors)

    def run(users: np.ndarray, seen: list[np.ndarray], m: int) -> np.ndarray:
        return search_filtered(index, user_vectors[users], seen, m)[0]
    return run


@dataclass(frozen=True)
class RecallTarget:
    users: np.ndarray              # evaluated users (training history and >= 1 unseen test positive)
    items: list[np.ndarray]        # their unseen test positives
    cold: list[np.ndarray]         # per item: True when it is a strict cold item
    n_cold: int
    n_warm: int
    skipped_seen: int              # test positives already in the user's training rows (cannot be candidates)
    skipped_no_history: int        # test positives of users without training positives


def recall_targets(ws: Workspace) -> RecallTarget:
    """The workspace's test positives (:attr:`Workspace.test_positives`) with their cold flags."""
    target = ws.test_positives
    cold_items = ws.cold_items
    users = np.array(list(target.items), dtype=np.int64)
    items = [np.array(target.items[u], dtype=np.int64) for u in users]
    cold = [np.array([i in cold_items for i in its], dtype=bool) for its in items]
    n_cold = int(sum(c.sum() for c in cold))
    n_warm = int(sum(len(c) for c in cold)) - n_cold
    return RecallTarget(users, items, cold, n_cold, n_warm, target.skipped_seen, target.skipped_no_history)


def recall_at(retriever: Retriever, target: RecallTarget, seen: dict[int, np.ndarray], ms: Sequence[int],
              batch: int = 1024) -> dict[str, list[float | None]]:
    """Share of cold / warm / all test positives that land in the user's top-M, for each M in ``ms``."""
    m_max = max(ms)
    empty = np.zeros(0, dtype=np.int64)
    ranks_cold: list[int] = []
    ranks_warm: list[int] = []
    for start in range(0, len(target.users), batch):
        users = target.users[start:start + batch]
        ids = retriever(users, [seen.get(int(u), empty) for u in users], m_max)
        for r in range(len(users)):
            pos = {int(item): rank for rank, item in enumerate(ids[r]) if item >= 0}
            for item, is_cold in zip(target.items[start + r], target.cold[start + r]):
                (ranks_cold if is_cold else ranks_warm).append(pos.get(int(item), m_max))
    rc, rw = np.array(ranks_cold), np.array(ranks_warm)
    ra = np.concatenate([rc, rw])

    def share(ranks: np.ndarray, m: int) -> float | None:
        return float((ranks < m).mean()) if len(ranks) else None  # None: no such test positives

    return {"cold": [share(rc, m) for m in ms], "warm": [share(rw, m) for m in ms],
            "all": [share(ra, m) for m in ms]}


def candidate_recall(ws: Workspace, settings, ms: Sequence[int] = DEFAULT_RECALL_MS) -> dict:
    """Recall@M of Two-Tower candidates beside popularity and content-only (MiniLM) baselines.

    Writes ``retrieval/recall.json``. Reads the test split: evaluation only, never used to build anything.
    """
    artefacts.check_current(ws, settings, "index")
    ms = sorted({int(m) for m in ms})
    seen = seen_items(ws)
    target = recall_targets(ws)
    users_tt, items_tt = artefacts.load_tower_vectors(ws)
    item_content = artefacts.load_array(ws, "content", "item_content.npy")
    user_content = artefacts.load_array(ws, "content", "user_content.npy")
    counts = np.zeros(len(items_tt), dtype=np.int64)
    for x in ws.train:
        if x.weight > 0:
            counts[x.item_idx] += 1
    retrievers = {
        "two_tower": vector_retriever(users_tt, items_tt),
        "popularity": popularity_retriever(counts),
        "content": vector_retriever(user_content, item_content),
    }
    results = {}
    for name, retriever in retrievers.items():
        started = time.perf_counter()
        results[name] = recall_at(retriever, target, seen, ms)
        results[name]["seconds"] = round(time.perf_counter() - started, 3)
    report = {
        "dataset": ws.name, "ms": ms, "users": len(target.users),
        "test_positives": {"cold": target.n_cold, "warm": target.n_warm,
                           "skipped_seen_in_train": target.skipped_seen,
                           "skipped_user_without_history": target.skipped_no_history},
        "retrievers": results,
    }
    out = ws.retrieval / "recall.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report
