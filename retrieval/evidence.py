"""Similar-item evidence for a candidate (thesis §4.3.4, RAG-style evidence).

For an item, up to ``evidence_k`` nearest *other* items in the Two-Tower item space whose inner product is
above ``evidence_min_sim``: kept as item indices (``neighbours``), so a prompt can point at a neighbour it
already shows (another candidate, an item of the shopper's history) instead of re-typing it, and rendered as
one short ``title (path tail)`` each (``for_item``) where it must be written out. How a prompt labels and
references them is the prompt's business, in one place (``labeler.prompts``). Computed on demand and kept in memory: a
labeler only needs evidence for the candidates it actually shows, and one batched FAISS query per user's
candidate list is cheap.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from coldlabel.data.workspace import PATH_SEP, Item
from retrieval.index import flat_index, one_thread_if_small

TITLE_CHARS = 80
PATH_LEVELS = 2


def render(item: Item) -> str:
    """``<title> (<last path levels>)``, without a label: the prompt says what the snippet is."""
    title = item.title if len(item.title) <= TITLE_CHARS else item.title[:TITLE_CHARS - 1].rstrip() + "…"
    tail = PATH_SEP.join(item.category_path[-PATH_LEVELS:])
    return f"{title} ({tail})" if tail else title


class Evidence:
    def __init__(self, items: list[Item], item_vectors: np.ndarray, k: int, min_sim: float, index=None):
        if len(items) != len(item_vectors):
            raise ValueError(f"evidence: {len(items)} items but {len(item_vectors)} item vectors")
        self.items = items
        self.vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        self.k = k
        self.min_sim = min_sim
        self.index = index if index is not None else flat_index(self.vectors)
        self._cache: dict[int, tuple[int, ...]] = {}
        self.searched = 0  # items looked up so far (for the benchmark)

    def prefetch(self, item_idxs: Iterable[int], batch: int = 4096) -> None:
        """Compute evidence for every not-yet-cached item in one batched search."""
        todo = sorted({int(i) for i in item_idxs if int(i) not in self._cache})
        if not todo or self.k == 0:
            for i in todo:
                self._cache[i] = ()
            return
        k = min(self.k + 1, self.index.ntotal)  # +1: the item itself is usually its own nearest neighbour
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            with one_thread_if_small(len(chunk)):
                scores, ids = self.index.search(self.vectors[chunk], k)
            for item, row_s, row_i in zip(chunk, scores, ids):
                picked = [int(j) for s, j in zip(row_s, row_i) if j >= 0 and j != item and s > self.min_sim]
                self._cache[item] = tuple(picked[:self.k])
            self.searched += len(chunk)

    def neighbours(self, item_idx: int) -> tuple[int, ...]:
        """Indices of the similar items, most similar first."""
        if item_idx not in self._cache:
            self.prefetch([item_idx])
        return self._cache[item_idx]

    def for_item(self, item_idx: int) -> tuple[str, ...]:
        """The similar items rendered as ``title (path tail)``."""
        return tuple(render(self.items[j]) for j in self.neighbours(item_idx))
