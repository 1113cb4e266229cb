"""Writing one synthetic dataset: the 2014 raw files (reviews, metadata) and the separate truth file.

Every file goes through ``GzipWriter`` (no timestamp, no file name in the gzip header), so equal content gives
byte-identical files. The writers that draw (reviewer names, phrase choice, ranks, prices, image ids) take the
generator's rng: ``generate`` calls them in a fixed order, and that order is part of the output.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from coldlabel.data.synth.presets import DAY, TRAIN_RATIO, SynthConfig
from coldlabel.data.synth.vocabulary import CLOSERS, FIRST_NAMES, OPENERS, ROOTS, SUMMARIES, TaxonomyLeaf, is_suffix
from coldlabel.data.synth.world import Catalogue, Items, Tastes, Timeline


@dataclass(frozen=True)
class OutputPaths:
    """Where one dataset goes: the raw files the pipeline reads, and the truth file it never reads."""

    raw: Path
    reviews: Path
    meta: Path
    truth: Path

    @classmethod
    def under(cls, out_dir: Path, category: str) -> OutputPaths:
        raw = out_dir / "raw"
        return cls(raw, raw / f"reviews_{category}_5.json.gz", raw / f"meta_{category}.json.gz",
                   out_dir / "truth" / "truth.json.gz")


def amazon_ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> list[str]:
    """Unique Amazon-looking ids (``A1B2...`` reviewer ids, ``B00...`` asins)."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        codes = alphabet[rng.integers(0, len(alphabet), (n - len(out), length))]
        for row in codes:
            s = prefix + "".join(row)
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


class GzipWriter:
    """gzip with mtime=0 and no file name in the header, so equal content gives byte-identical files."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> IO[bytes]:
        self._raw = open(self.path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6)
        return self._gz

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._gz.close()
        self._raw.close()


def _review_time(unix: int) -> str:
    d = dt.datetime.fromtimestamp(unix, dt.UTC)
    return f"{d.month:02d} {d.day}, {d.year}"


def write_reviews(rng: np.random.Generator, path: Path, slot_user: np.ndarray, slot_item: np.ndarray,
                  rating: np.ndarray, unix: np.ndarray, user_ids: list[str], asins: list[str], items: Items,
                  leaves: list[TaxonomyLeaf]) -> None:
    """JSON lines with the 2014 keys and key order; file ordered by asin, then reviewer, like the real dump."""
    n = len(slot_user)
    names = [f"{FIRST_NAMES[a]} {chr(65 + b)}." for a, b in zip(
        rng.integers(0, len(FIRST_NAMES), len(user_ids)), rng.integers(0, 26, len(user_ids)), strict=True)]
    pick = rng.integers(0, 3, (n, 2))
    aids = np.array(asins)
    uids = np.array(user_ids)
    order = np.lexsort((uids[slot_user], aids[slot_item]))
    with GzipWriter(path) as fh:
        for s in order:
            u, i, r = int(slot_user[s]), int(slot_item[s]), int(rating[s])
            ptype = leaves[items.leaf[i]].product_type.lower()
            said = items.attrs[i][pick[s, 0] % len(items.attrs[i])] if items.attrs[i] else ""
            attr = (f" I chose it {said}." if is_suffix(said) else f" I chose it because it is {said}.") if said else ""
            rec = {"reviewerID": user_ids[u], "asin": asins[i], "reviewerName": names[u], "helpful": [0, 0],
                   "reviewText": f"{OPENERS[r][pick[s, 0]]} {ptype}.{attr} {CLOSERS[r]}",
                   "overall": float(r), "summary": SUMMARIES[r][pick[s, 1]],
                   "unixReviewTime": int(unix[s]), "reviewTime": _review_time(int(unix[s]))}
            fh.write((json.dumps(rec) + "\n").encode())


def write_meta(rng: np.random.Generator, path: Path, cfg: SynthConfig, asins: list[str], items: Items,
               leaves: list[TaxonomyLeaf], brands: list[str]) -> None:
    """One ``repr(dict)`` per line (Python literal, single quotes), keys as in the 2014 metadata dump."""
    n = len(asins)
    root = ROOTS[cfg.taxonomy]
    rank = np.argsort(np.argsort(-items.pop * np.exp(0.5 * rng.standard_normal(n)))) * 7 + rng.integers(1, 7, n)
    price = np.round(np.exp(np.log(15.0) + 0.7 * rng.standard_normal(n)), 2)
    has_price, has_rank, has_desc = rng.random(n) < 0.85, rng.random(n) < 0.9, rng.random(n) < 0.92
    second = rng.random(n) < 0.15
    img = amazon_ids(rng, n, "", 10)
    with GzipWriter(path) as fh:
        for i in np.argsort(np.array(asins)):
            path_ = list(leaves[items.leaf[i]].path)
            cats = [path_]
            if second[i]:  # a shorter second chain, as real items are often cross-listed; the longest is the path
                cats.append(path_[:2] if len(path_) > 2 else [root])
            rec: dict = {"asin": asins[i]}
            if has_desc[i]:
                rec["description"] = items.description[i]
            rec["title"] = items.title[i]
            rec["imUrl"] = f"http://ecx.images-amazon.com/images/I/{img[i]}.jpg"
            if has_rank[i]:
                rec["salesRank"] = {root: int(rank[i])}
            rec["categories"] = cats
            if has_price[i]:
                rec["price"] = float(price[i])
            rec["brand"] = brands[items.brand[i]]
            fh.write((repr(rec) + "\n").encode())


def write_truth(path: Path, cfg: SynthConfig, seed: int, split_unix: int, cat: Catalogue, timeline: Timeline,
                items: Items, tastes: Tastes, user_bias: np.ndarray, asins: list[str], user_ids: list[str]) -> None:
    """The planted truth as one JSON object: leaves, every item's latent facts, every user's tastes.

    Evaluation and tests read it to check that the pipeline recovers something real; the pipeline never does.
    """
    leaves, brands, vocab = cat.leaves, cat.brands, tastes.vocab
    t_leaf = tastes.leaf
    base_unix, n_days = timeline.base_unix, timeline.n_days
    truth = {
        "preset": cfg.name, "seed": seed, "category": cfg.category, "root": ROOTS[cfg.taxonomy],
        "train_ratio": TRAIN_RATIO, "split_unix_time": split_unix,
        "leaves": [{"path": list(lf.path), "product_type": lf.product_type} for lf in leaves],
        "items": {asins[i]: {
            "leaf": list(leaves[items.leaf[i]].path), "product_type": leaves[items.leaf[i]].product_type,
            "brand": brands[items.brand[i]], "attributes": items.attrs[i], "size": items.size[i],
            "release_unix_time": int(base_unix + items.release[i] * DAY), "cold": bool(items.cold[i]),
            "reviewed": not bool(items.extra[i]), "popularity": round(float(items.pop[i]), 4),
            "quality": round(float(items.quality[i]), 4)} for i in range(cat.n_all)},
        "users": {user_ids[u]: {
            "leaves": [list(leaves[j].path) for j in t_leaf[u] if j >= 0],
            "leaf_weights_start": [round(float(x), 4) for x, j in zip(tastes.w0[u], t_leaf[u], strict=True) if j >= 0],
            "leaf_weights_end": [round(float(x), 4) for x, j in zip(tastes.w1[u], t_leaf[u], strict=True) if j >= 0],
            "brands": [brands[b] for b in tastes.brand[u] if b >= 0],
            "attributes": [vocab[a] for a in tastes.attr[u] if a < len(vocab)],
            "explore": round(float(tastes.explore[u]), 4), "bias": round(float(user_bias[u]), 4),
            "window_unix_time": [int(base_unix + int(timeline.u_start[u] * n_days) * DAY),
                                 int(base_unix + int(timeline.u_end[u] * n_days) * DAY)]}
            for u in range(len(user_ids))},
    }
    with GzipWriter(path) as fh:
        fh.write(json.dumps(truth, sort_keys=True, separators=(",", ":")).encode())


def refuse_foreign_raw(raw: Path, reviews_path: Path, meta_path: Path) -> None:
    """A workspace holds one dataset: never mix synthetic files with another category's (or real) raw files."""
    if not raw.is_dir():
        return
    for p in raw.iterdir():
        if p.name.endswith(("_5.json", "_5.json.gz")) and p != reviews_path:
            raise FileExistsError(f"{raw} already holds another reviews file ({p.name}); "
                                  f"use another workspace (--dataset) or remove it")
        if p.name.startswith("meta_") and p != meta_path:
            raise FileExistsError(f"{raw} already holds another metadata file ({p.name}); "
                                  f"use another workspace (--dataset) or remove it")
