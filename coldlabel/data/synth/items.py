"""How an item looks: brand names, and an item's leaf, brand, attributes, size and the text made of them.

Step 2 of the generative story (see ``generate.py``); the release days are planted there, after the time cut.
"""
from __future__ import annotations

import numpy as np

from coldlabel.data.synth.presets import SynthConfig
from coldlabel.data.synth.vocabulary import (
    ENDINGS,
    PRODUCT_LINES,
    STEMS,
    SUFFIX_WORDS,
    attribute_pool,
    is_suffix,
    title_case,
)
from coldlabel.data.synth.world import Catalogue, Items


def brand_names(rng: np.random.Generator, kind: str, n: int) -> list[str]:
    """``n`` distinct made-up brand names ("Calorine", "Calorine Labs") for a ``beauty`` or ``health`` catalogue."""
    bases = [s + e for s in STEMS for e in ENDINGS]
    names = [f"{b} {w}" for b in bases for w in SUFFIX_WORDS[kind]] + bases
    if n > len(names):
        raise ValueError(f"asked for {n} brands, the name pool has {len(names)}")
    return [names[i] for i in rng.choice(len(names), n, replace=False)]


def compose_items(rng: np.random.Generator, cfg: SynthConfig, cat: Catalogue) -> Items:
    """Items with a leaf, a brand, 1-3 feature attributes and a size, and title/description composed from them.

    The text carries exactly the facts users' tastes are made of, so a model reading titles can recover them.
    Every leaf gets at least two items (one is later released on day 0, so early slots always have a choice).
    """
    leaves, brands, n = cat.leaves, cat.brands, cat.n_all
    counts = 2 + rng.multinomial(n - 2 * len(leaves), cat.leaf_pop)
    leaf = np.repeat(np.arange(len(leaves)), counts)
    brand = np.empty(n, dtype=np.int64)
    attrs, size, line, titles, descs = [], [], [], [], []
    for area, idx in cat.area_brands.items():
        in_area = np.nonzero([leaves[j].area == area for j in leaf])[0]
        zipf = 1.0 / np.arange(1, len(idx) + 1) ** 0.8
        brand[in_area] = idx[rng.choice(len(idx), len(in_area), p=zipf / zipf.sum())]
    for i in range(n):
        lf = leaves[leaf[i]]
        pool = attribute_pool(lf)
        groups = pool["features"]
        k = min(len(groups), 1 + rng.binomial(2, 0.5))
        chosen = sorted(rng.choice(len(groups), k, replace=False))
        opts = [groups[g].split("|") for g in chosen]
        a = [o[rng.integers(len(o))] for o in opts]
        attrs.append(a)
        size.append(pool["sizes"][rng.integers(len(pool["sizes"]))])
        line.append(PRODUCT_LINES[rng.integers(len(PRODUCT_LINES))] if rng.random() < 0.5 else "")
        pre = " ".join(title_case(x) for x in a if not is_suffix(x))
        post = " ".join(title_case(x, keep_first=True) for x in a if is_suffix(x))
        b = brands[brand[i]]
        titles.append(" ".join(x for x in (b, line[-1], pre, lf.product_type, post) if x) + f", {size[-1]}")
        claims = ", ".join(x for x in a if not is_suffix(x))
        details = " ".join(x for x in a if is_suffix(x))
        descs.append(
            f"{b} {(line[-1] + ' ').lower() if line[-1] else ''}{lf.product_type.lower()}"
            f"{' ' + details if details else ''}. " + (f"{claims[:1].upper() + claims[1:]}. " if claims else "")
            + f"{size[-1][:1].upper() + size[-1][1:]}.")
    pop = np.exp(cfg.popularity_sigma * rng.standard_normal(n))
    quality = 0.4 * rng.standard_normal(n)
    none = np.zeros(n, dtype=bool)
    return Items(leaf, brand, attrs, size, line, pop, quality, titles, descs, release=np.zeros(n, dtype=np.int64),
                 extra=none, cold=none.copy(), reviewed=np.arange(n), by_leaf=[])
