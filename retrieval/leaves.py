"""Leaf clusters and per-user interest leaves (thesis §4.2).

Items sharing a full category path form one group. A group of at most ``max_leaf_size`` items is one leaf;
a larger one is split into ``ceil(n / max_leaf_size)`` buckets by a small inner-product k-means over the
Two-Tower item vectors, falling back to a stable hash of the asin when vectors are missing or too few. Any
bucket still above the cap is cut in order, so no leaf ever exceeds it. The explicit stage-2/3 taxonomy is
not built here: it comes read-only from ``processed/taxonomy.json``.
"""
from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from coldlabel.data.workspace import PATH_SEP, Item

NO_PATH = "(no category)"
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_STOP = frozenset("the and for with from that this your you our are not all new set pack count size oz ml fl per pcs "
                  "piece pieces inch each one two three".split())


@dataclass(frozen=True)
class Leaf:
    id: str
    path: tuple[str, ...]
    items: tuple[int, ...]
    method: str        # "whole" (group fits), "kmeans", or "hash" (fallback)
    description: str


def kmeans_ip(vectors: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Spherical k-means: assign by inner product, centres = normalised means. Returns a label per row."""
    centres = vectors[rng.choice(len(vectors), size=k, replace=False)].copy()
    labels = np.zeros(len(vectors), dtype=np.int64)
    for _ in range(iters):
        labels = np.argmax(vectors @ centres.T, axis=1)
        for c in range(k):
            members = vectors[labels == c]
            if len(members):  # an empty cluster keeps its old centre
                mean = members.mean(axis=0)
                norm = np.linalg.norm(mean)
                if norm > 0:
                    centres[c] = mean / norm
    return labels


def stable_hash(text: str) -> int:
    """Same value in every process (Python's ``hash`` of a str is salted per run)."""
    return zlib.crc32(text.encode("utf-8"))


def cap_split(members: Sequence[int], cap: int) -> list[list[int]]:
    """Cut a bucket into ceil(n/cap) near-equal consecutive parts, each <= cap."""
    members = list(members)
    parts = max(1, math.ceil(len(members) / cap))
    size = math.ceil(len(members) / parts)
    return [members[i:i + size] for i in range(0, len(members), size)]


def split_group(item_idxs: list[int], asins: list[str], vectors: np.ndarray | None, cap: int, iters: int,
                rng: np.random.Generator) -> tuple[list[list[int]], str]:
    """Buckets (each <= cap) for one category-path group, and the method used."""
    if len(item_idxs) <= cap:
        return [item_idxs], "whole"
    k = math.ceil(len(item_idxs) / cap)
    labels: np.ndarray | None = None
    method = "hash"
    if vectors is not None:
        sub = vectors[item_idxs]
        valid = np.linalg.norm(sub, axis=1) > 0
        if valid.sum() >= max(k, 2) * 2:  # "too few" = not enough points for k meaningful centres
            labels = np.empty(len(item_idxs), dtype=np.int64)
            labels[valid] = kmeans_ip(sub[valid], k, iters, rng)
            # Items without a vector still need a home: hash them into the same k buckets.
            labels[~valid] = [stable_hash(asins[j]) % k for j in np.flatnonzero(~valid)]
            method = "kmeans"
    if labels is None:
        labels = np.array([stable_hash(a) % k for a in asins])
    buckets: list[list[int]] = []
    for c in range(k):
        members = sorted(item_idxs[j] for j in np.flatnonzero(labels == c))
        if members:
            buckets.extend(cap_split(members, cap))
    return buckets, method


def describe(path: tuple[str, ...], members: list[Item], n_words: int = 5, n_brands: int = 3) -> str:
    """Readable leaf text: path, most frequent title words (not already in the path) and brands."""
    path_words = {w for level in path for w in _WORD.findall(level.lower())}
    words = Counter(w for it in members for w in set(_WORD.findall(it.title.lower()))
                    if w not in _STOP and w not in path_words)
    brands = Counter(it.brand for it in members if it.brand)
    text = PATH_SEP.join(path) if path else NO_PATH
    parts = [f"{text} ({len(members)} items)"]
    if words:
        parts.append("words: " + ", ".join(w for w, _ in words.most_common(n_words)))
    if brands:
        parts.append("brands: " + ", ".join(b for b, _ in brands.most_common(n_brands)))
    return "; ".join(parts)


def build_leaves(items: list[Item], vectors: np.ndarray | None, max_leaf_size: int, iters: int,
                 seed: int) -> list[Leaf]:
    """All leaves, ordered by category path, then bucket."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for it in items:
        groups.setdefault(it.category_path, []).append(it.idx)
    leaves: list[Leaf] = []
    for path in sorted(groups):
        idxs = groups[path]
        text = PATH_SEP.join(path) if path else NO_PATH
        rng = np.random.default_rng([seed, stable_hash(text)])
        buckets, method = split_group(idxs, [items[i].asin for i in idxs], vectors, max_leaf_size, iters, rng)
        for j, bucket in enumerate(buckets, 1):
            leaf_id = text if len(buckets) == 1 else f"{text} #{j}"
            leaves.append(Leaf(leaf_id, path, tuple(bucket), method,
                               describe(path, [items[i] for i in bucket])))
    return leaves


def item_leaf_ids(leaves: list[Leaf], n_items: int) -> list[str]:
    """``out[item_idx]`` = the id of the leaf holding that item."""
    out = [""] * n_items
    for leaf in leaves:
        for i in leaf.items:
            out[i] = leaf.id
    return out


def interest_leaves(sequence: Sequence[int], item_leaf: Sequence[str], history: int, cap: int) -> list[str]:
    """Leaves of the user's last ``history`` training items, deduplicated in first-seen order, <= cap."""
    out: list[str] = []
    for item in sequence[-history:]:
        leaf = item_leaf[item]
        if leaf not in out:
            out.append(leaf)
            if len(out) == cap:
                break
    return out
