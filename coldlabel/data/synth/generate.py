"""Synthetic benchmark with a planted truth, written in the Amazon 2014 5-core raw format.

Why: the real Beauty / Health dumps are large downloads; a generator with the same file format lets the same
loader (``coldlabel/data/formats.py``) serve real and synthetic data, and its planted truth (who likes what,
which items are new) lets evaluation and tests check that the pipeline recovers something real.

The generative story (each numbered part is a named step below; ``generate`` runs them):

1. a Beauty-like or Health-like taxonomy (>= 4 levels, >= 150 leaves), brands per area, attributes per area;
2. items: a leaf, a brand, 1-3 feature attributes and a size; title and description are composed from them, so
   the text carries exactly what users care about; each item has a popularity and a release day;
3. users: a time-localised activity window, a review count (>= 5), a few taste leaves whose weights drift from a
   start to an end mix, favourite brands and attributes, and a rate of exploring outside their taste;
4. review slots (user, day) are laid out first, so the 70/30 time cut is known; items released after the cut
   are the planted strict cold items;
5. each slot picks a leaf (taste or exploration) and then an item released by that day, weighted by
   popularity × recency × brand/attribute affinity; one review per (user, item);
6. repair: every item gets >= 5 reviews (slots are moved from items that have more), every non-cold item gets
   one training review, so the 5-core property and "cold == released after the cut" hold exactly;
7. ratings from taste match (leaf, brand, attributes) plus user/item bias and noise, cut at quantiles that give
   the real rating mix (~89 % of ratings >= 3).
8. write the raw files and the truth file.

All steps draw from one rng, in the order ``generate`` calls them; that order is part of the output (same
preset + seed -> byte-identical files), so the code's order differs from the story's telling: user windows
and review slots (3-4) come before the items (2), whose release days depend on the cut, and tastes come
after the items, whose brands and attributes they pick from.

Outputs: ``raw/reviews_<Cat>_5.json.gz`` (JSON lines), ``raw/meta_<Cat>.json.gz`` (one ``repr(dict)`` per
line, like the 2014 dumps) and ``truth/truth.json.gz`` (tastes, item attributes; never read by the pipeline).
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console

from coldlabel.data.synth import writers
from coldlabel.data.synth.items import brand_names, compose_items
from coldlabel.data.synth.presets import DAY, MIN_REVIEWS, PRESETS, TRAIN_RATIO, SynthConfig, SynthSummary
from coldlabel.data.synth.vocabulary import attribute_pool, taxonomy
from coldlabel.data.synth.world import Catalogue, Items, Tastes, Timeline

_MAX_LEAVES, _MAX_BRANDS, _MAX_ATTRS = 6, 3, 3  # widths of the per-user taste tables


def generate(preset: str, out_dir: Path, seed: int = 0, progress: bool = False) -> SynthSummary:
    """Write ``raw/`` and ``truth/`` of one synthetic dataset under ``out_dir``; deterministic in (preset, seed)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; expected one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    started = time.perf_counter()
    say = _reporter(progress)
    paths = writers.OutputPaths.under(Path(out_dir), cfg.category)
    writers.refuse_foreign_raw(paths.raw, paths.reviews, paths.meta)
    rng = np.random.default_rng([seed, 20140723])

    cat = _taxonomy_and_brands(rng, cfg)
    say("taxonomy", f"{len(cat.leaves)} leaves, {len(cat.brands)} brands")
    timeline = _user_windows_and_slots(rng, cfg)
    say("slots", f"{cfg.n_users:,} users, {timeline.n_slots:,} review slots, "
                 f"split day {timeline.cut_day}/{timeline.n_days}")
    items = compose_items(rng, cfg, cat)
    _plant_cold_items(rng, cfg, cat, timeline, items)
    n_cold = int(items.cold.sum())
    say("items", f"{cat.n_all:,} items ({n_cold} planted cold, {cat.n_extra} metadata-only)")
    tastes = _user_tastes(rng, cfg, cat, items)
    say("users", "tastes drawn")
    slot_leaf = _slot_leaves(rng, cat, timeline, tastes)
    slot_item, user_items = _slot_items(rng, cfg, timeline, items, tastes, slot_leaf)
    say("reviews", "items drawn")
    _repair(rng, timeline, items, slot_item, user_items)
    say("repair", "5-core and cold-item invariants enforced")
    rating, user_bias = _ratings(rng, cfg, timeline, items, tastes, slot_item)
    say("ratings", f"mean {rating.mean():.2f}, >=3: {100 * (rating >= 3).mean():.1f}%")
    split_unix = _write(rng, cfg, seed, paths, cat, timeline, items, tastes, slot_item, rating, user_bias)

    summary = SynthSummary(cfg.name, seed, paths.reviews, paths.meta, paths.truth, timeline.n_slots, cfg.n_users,
                           cat.n_reviewed, cat.n_all, n_cold, split_unix, time.perf_counter() - started)
    say("done", str(summary))
    return summary


# ---- 1. taxonomy, brands ------------------------------------------------------------------------------------------
def _taxonomy_and_brands(rng: np.random.Generator, cfg: SynthConfig) -> Catalogue:
    """The leaves in play with a lognormal popularity, and brand names per level-2 area.

    Small presets keep a random subset of leaves so each leaf still has several items. Brands are sized to their
    area's share of items (~``items_per_brand`` each) and belong to one area, as real brands mostly do.
    """
    all_leaves = taxonomy(cfg.taxonomy)
    if cfg.n_leaves and cfg.n_leaves < len(all_leaves):
        keep = np.sort(rng.choice(len(all_leaves), cfg.n_leaves, replace=False))
        leaves = [all_leaves[i] for i in keep]
    else:
        leaves = all_leaves
    leaf_pop = np.exp(cfg.leaf_sigma * rng.standard_normal(len(leaves)))
    leaf_pop /= leaf_pop.sum()
    areas = sorted({lf.area for lf in leaves})
    n_extra = round(cfg.extra_meta_frac * cfg.n_items)
    n_all = cfg.n_items + n_extra
    area_share = {a: sum(leaf_pop[j] for j, lf in enumerate(leaves) if lf.area == a) for a in areas}
    # int(): round() of a numpy float is a float under numpy 1.x
    n_brands = {a: max(3, int(round(area_share[a] * n_all / cfg.items_per_brand))) for a in areas}
    brands = brand_names(rng, cfg.taxonomy, sum(n_brands.values()))
    area_brands, start = {}, 0
    for a in areas:
        area_brands[a] = np.arange(start, start + n_brands[a])
        start += n_brands[a]
    return Catalogue(leaves, leaf_pop, areas, area_share, brands, area_brands, cfg.n_items, n_extra)


# ---- 3-4. user activity windows, review slots, the time cut -------------------------------------------------------
def _user_windows_and_slots(rng: np.random.Generator, cfg: SynthConfig) -> Timeline:
    """Each user's activity window and review days, laid out before any item is chosen.

    Knowing every review's day first fixes the 70/30 cut day, so cold items can be planted exactly "released
    after the cut". Arrivals grow like exp(start_growth t) and windows are lognormal, which gives the real data's
    late-arriving users; review counts are 5 + a heavy-tailed negative binomial (the 5-core floor).
    """
    first = dt.date.fromisoformat(cfg.first_day)
    n_days = (dt.date.fromisoformat(cfg.last_day) - first).days
    base_unix = int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp())
    U = cfg.n_users
    g = cfg.start_growth
    u = rng.random(U)  # inverse CDF of a density ∝ exp(g t) on [0, 1]
    u_start = np.log1p(u * np.expm1(g)) / g if abs(g) > 1e-9 else u
    u_end = np.minimum(1.0, u_start + np.exp(np.log(cfg.window_median) + cfg.window_sigma * rng.standard_normal(U)))
    p = cfg.count_shape / (cfg.count_shape + cfg.extra_reviews)
    k = MIN_REVIEWS + rng.negative_binomial(cfg.count_shape, p, U)
    slot_user = np.repeat(np.arange(U), k)
    span = (u_end - u_start)[slot_user]
    frac = rng.random(slot_user.size)
    slot_x = u_start[slot_user] + span * frac
    slot_day = np.minimum((slot_x * n_days).astype(np.int64), n_days)
    order = np.lexsort((slot_x, slot_user))  # per user in time order (slots of one user are contiguous)
    slot_user, slot_day, slot_x = slot_user[order], slot_day[order], slot_x[order]
    cut_day = int(np.sort(slot_day)[int(slot_user.size * TRAIN_RATIO)])  # day of the first test row
    return Timeline(n_days, base_unix, u_start, u_end, slot_user, slot_day, slot_x, cut_day)


# ---- 2, after the cut. release days: metadata-only and planted cold items -----------------------------------------
def _plant_cold_items(rng: np.random.Generator, cfg: SynthConfig, cat: Catalogue, timeline: Timeline,
                      items: Items) -> None:
    """Pick the metadata-only and the planted cold items, and give every item a release day (fills ``items``).

    Cold items are released after the cut day, so "cold by the time split" is the planted truth; warm items
    follow the review-time distribution (the catalogue grows with the site), a little ahead of it. The first
    item of each leaf is reviewed and released on day 0, so early slots always have a choice.
    """
    n_all, n_days, cut_day, slot_day = cat.n_all, timeline.n_days, timeline.cut_day, timeline.slot_day
    extra = np.zeros(n_all, dtype=bool)
    first_of_leaf = np.r_[True, items.leaf[1:] != items.leaf[:-1]]
    extra[rng.choice(np.nonzero(~first_of_leaf)[0], cat.n_extra, replace=False)] = True
    eligible = np.nonzero(~first_of_leaf & ~extra)[0]
    n_cold = round(cfg.cold_item_frac * cat.n_reviewed)
    cold = np.zeros(n_all, dtype=bool)
    cold[rng.choice(eligible, n_cold, replace=False)] = True
    test_days = n_days - cut_day
    release = np.empty(n_all, dtype=np.int64)
    release[cold] = cut_day + 1 + (rng.random(n_cold) * cfg.cold_release_span * test_days).astype(np.int64)
    warm = ~cold
    pre_cut = np.sort(slot_day[slot_day < cut_day - 7])
    lead = rng.exponential(0.05 * n_days, warm.sum())
    release[warm] = np.maximum(0, pre_cut[rng.integers(0, len(pre_cut), warm.sum())] - lead).astype(np.int64)
    release[first_of_leaf] = 0
    items.release, items.extra, items.cold = release, extra, cold
    items.reviewed = np.nonzero(~extra)[0]
    items.by_leaf = [items.reviewed[items.leaf[items.reviewed] == j] for j in range(len(cat.leaves))]


# ---- 3. user tastes -----------------------------------------------------------------------------------------------
def _user_tastes(rng: np.random.Generator, cfg: SynthConfig, cat: Catalogue, items: Items) -> Tastes:
    """Each user's taste: 1-5 leaves of one area, favourite brands and attributes among those leaves' items.

    Half the users also have a leaf that only grows in over their window (weight 0 at the start), so tastes
    drift as in real histories; ``explore`` is how often a review falls outside the taste leaves.
    """
    U, leaves, leaf_pop, areas = cfg.n_users, cat.leaves, cat.leaf_pop, cat.areas
    n_leaves, items_of_leaf = len(leaves), items.by_leaf
    leaf_of_area = {a: np.array([j for j, lf in enumerate(leaves) if lf.area == a]) for a in areas}
    vocab = sorted({o for lf in leaves for grp in attribute_pool(lf)["features"] for o in grp.split("|")})
    attr_id = {a: i for i, a in enumerate(vocab)}
    item_attr = np.zeros((cat.n_all, len(vocab) + 1), dtype=np.int8)  # last column: padding, always 0
    for i, a in enumerate(items.attrs):
        item_attr[i, [attr_id[x] for x in a]] = 1
    t_leaf = np.full((U, _MAX_LEAVES), -1, dtype=np.int64)
    t_w0 = np.zeros((U, _MAX_LEAVES))
    t_w1 = np.zeros((U, _MAX_LEAVES))
    t_brand = np.full((U, _MAX_BRANDS), -1, dtype=np.int64)
    t_attr = np.full((U, _MAX_ATTRS), len(vocab), dtype=np.int64)
    explore = rng.beta(2.0, 2.0 * (1 - cfg.explore) / cfg.explore, U)
    area_p = np.array([cat.area_share[a] for a in areas])
    attrs_of_leaf = [sorted({attr_id[x] for i in items_of_leaf[j] for x in items.attrs[i]}) for j in range(n_leaves)]
    for u in range(U):
        area = areas[rng.choice(len(areas), p=area_p)]
        cand = leaf_of_area[area]
        n_taste = min(len(cand), 1 + rng.poisson(1.0), _MAX_LEAVES - 1)
        lp = leaf_pop[cand] / leaf_pop[cand].sum()
        chosen = list(rng.choice(cand, n_taste, replace=False, p=lp))
        w0 = list(rng.dirichlet(np.ones(n_taste)))
        w1 = list(rng.dirichlet(np.ones(n_taste)))
        if rng.random() < 0.5:  # drift: a leaf that only grows in over the user's window
            other = [j for j in range(n_leaves) if j not in chosen]
            op = leaf_pop[other] / leaf_pop[other].sum()
            chosen.append(other[rng.choice(len(other), p=op)])
            w0.append(0.0)
            w1 = [w * 0.6 for w in w1] + [0.4]
        m = len(chosen)
        t_leaf[u, :m], t_w0[u, :m], t_w1[u, :m] = chosen, w0, w1
        pool = np.concatenate([items_of_leaf[j] for j in chosen])
        pb = items.pop[pool] / items.pop[pool].sum()
        fav = np.unique(items.brand[pool[rng.choice(len(pool), 1 + rng.binomial(2, 0.4), p=pb)]])
        t_brand[u, :len(fav)] = fav
        opts = sorted(set().union(*(attrs_of_leaf[j] for j in chosen)))
        if opts:
            likes = rng.choice(opts, min(len(opts), 1 + rng.binomial(2, 0.5)), replace=False)
            t_attr[u, :len(likes)] = likes
    return Tastes(t_leaf, t_w0, t_w1, t_brand, t_attr, explore, vocab, item_attr)


# ---- 5. leaf per slot, then item per slot -------------------------------------------------------------------------
def _slot_leaves(rng: np.random.Generator, cat: Catalogue, timeline: Timeline, tastes: Tastes) -> np.ndarray:
    """The leaf of each review slot: a taste leaf (weights interpolated over the user's window), or, with the
    user's ``explore`` chance, any leaf by popularity."""
    slot_user, u_start, u_end = timeline.slot_user, timeline.u_start, timeline.u_end
    lam = np.clip((timeline.slot_x - u_start[slot_user]) / np.maximum(u_end - u_start, 1e-9)[slot_user], 0, 1)
    w = (1 - lam)[:, None] * tastes.w0[slot_user] + lam[:, None] * tastes.w1[slot_user]
    slot_leaf = tastes.leaf[slot_user, _weighted_rows(rng, w)]
    roam = rng.random(timeline.n_slots) < tastes.explore[slot_user]
    slot_leaf[roam] = rng.choice(len(cat.leaves), roam.sum(), p=cat.leaf_pop)
    return slot_leaf


def _slot_items(rng: np.random.Generator, cfg: SynthConfig, timeline: Timeline, items: Items, tastes: Tastes,
                slot_leaf: np.ndarray) -> tuple[np.ndarray, list[set[int]]]:
    """The item of each slot, among its leaf's items released by that day, drawn by ``_appeal``.

    Drawn per leaf in chunks (vectorised); then repeats of a (user, item) pair are redrawn one by one in slot
    order, excluding what the user already has, so there is one review per (user, item) as in the real data.
    Returns the slot items and each user's set of items.
    """
    slot_user, slot_day, n_slots = timeline.slot_user, timeline.slot_day, timeline.n_slots
    slot_item = np.empty(n_slots, dtype=np.int64)
    by_leaf = np.argsort(slot_leaf, kind="stable")
    bounds = np.searchsorted(slot_leaf[by_leaf], np.arange(len(items.by_leaf) + 1))
    for j, cands in enumerate(items.by_leaf):
        slots_j = by_leaf[bounds[j]:bounds[j + 1]]
        for c in range(0, len(slots_j), 2048):
            chunk = slots_j[c:c + 2048]
            slot_item[chunk] = cands[_weighted_rows(rng, _appeal(cfg, timeline, items, tastes, chunk, cands))]
    user_items: list[set[int]] = [set() for _ in range(cfg.n_users)]
    for s in range(n_slots):
        u, i = slot_user[s], slot_item[s]
        if i in user_items[u]:
            cands = items.by_leaf[slot_leaf[s]]
            wgt = _appeal(cfg, timeline, items, tastes, np.array([s]), cands)[0]
            wgt[[n for n, c in enumerate(cands) if c in user_items[u]]] = 0.0
            if wgt.sum() <= 0:  # the user has every released item of that leaf: any released item elsewhere
                cands = items.reviewed[(items.release[items.reviewed] <= slot_day[s])]
                cands = np.array([c for c in cands if c not in user_items[u]])
                wgt = items.pop[cands]
            i = cands[rng.choice(len(cands), p=wgt / wgt.sum())]
            slot_item[s] = i
        user_items[u].add(int(i))
    return slot_item, user_items


def _appeal(cfg: SynthConfig, timeline: Timeline, items: Items, tastes: Tastes, slots: np.ndarray,
            cands: np.ndarray) -> np.ndarray:
    """Appeal of candidate items (columns) for review slots (rows): popularity × recency × affinity.

    Zero for items not yet released on the slot's day; favourite brands and liked attributes multiply it.
    """
    age = timeline.slot_day[slots][:, None] - items.release[cands][None, :]
    wgt = items.pop[cands][None, :] * np.exp(-np.maximum(age, 0) / cfg.decay_days) * (age >= 0)
    users = timeline.slot_user[slots]
    fav = (items.brand[cands][None, :, None] == tastes.brand[users][:, None, :]).any(axis=2)
    overlap = tastes.item_attr[cands][:, tastes.attr[users]].sum(axis=2).T  # (slots, cands)
    return wgt * np.where(fav, cfg.brand_boost, 1.0) * cfg.attr_boost ** overlap


def _weighted_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One weighted draw per row of a 2-D non-negative weight matrix (every row must have a positive sum)."""
    cum = np.cumsum(weights, axis=1)
    r = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum <= r[:, None]).sum(axis=1), weights.shape[1] - 1)


# ---- 6. repair ----------------------------------------------------------------------------------------------------
def _repair(rng: np.random.Generator, timeline: Timeline, items: Items, slot_item: np.ndarray,
            user_items: list[set[int]]) -> None:
    """Move review slots so every reviewed item has >= 5 reviews and every warm item one training review.

    Sampling alone leaves some unpopular items under the 5-core floor, and some warm items reviewed only after
    the cut (which would make them cold by the split, contradicting the truth). A slot is only moved from an item
    that keeps >= 5 reviews, to an item released by that slot's day that the user has not reviewed; slots of the
    same leaf are preferred, so the move stays taste-plausible. Users, days and therefore the time split are
    unchanged. Updates ``slot_item`` and ``user_items`` in place.
    """
    slot_user, slot_day, cut_day, cold = timeline.slot_user, timeline.slot_day, timeline.cut_day, items.cold
    counts = np.bincount(slot_item, minlength=len(items.leaf))
    train_counts = np.bincount(slot_item[slot_day < cut_day], minlength=len(items.leaf))
    slot_leaf = items.leaf[slot_item]
    leaf_slots = [np.nonzero(slot_leaf == j)[0] for j in range(len(items.by_leaf))]
    everything = np.arange(len(slot_item))

    def move(i: int, pools: list[np.ndarray], need: int, before: int | None) -> int:
        for pool in pools:
            ok = (slot_day[pool] >= items.release[i]) & (counts[slot_item[pool]] > MIN_REVIEWS)
            if before is not None:
                ok &= slot_day[pool] < before
            for s in rng.permutation(pool[ok]):
                if need == 0:
                    return 0
                u, old = slot_user[s], slot_item[s]
                if i in user_items[u] or counts[old] <= MIN_REVIEWS:
                    continue
                is_train = slot_day[s] < cut_day
                if is_train and not cold[old] and train_counts[old] <= 1:
                    continue  # never take a warm item's only training review
                user_items[u].discard(int(old))
                user_items[u].add(int(i))
                slot_item[s] = i
                counts[old] -= 1
                counts[i] += 1
                train_counts[old] -= is_train
                train_counts[i] += is_train
                need -= 1
            if need == 0:
                return 0
        return need

    reviewed = items.reviewed
    for i in reviewed[counts[reviewed] < MIN_REVIEWS]:
        left = move(int(i), [leaf_slots[items.leaf[i]], everything], MIN_REVIEWS - counts[i], None)
        if left:
            raise RuntimeError(f"synth: cannot give item {i} {MIN_REVIEWS} reviews; the preset is too small")
    for i in reviewed[~cold[reviewed] & (train_counts[reviewed] == 0)]:
        if move(int(i), [leaf_slots[items.leaf[i]], everything], 1, cut_day):
            raise RuntimeError(f"synth: cannot give warm item {i} a training review")


# ---- 7. ratings ---------------------------------------------------------------------------------------------------
def _ratings(rng: np.random.Generator, cfg: SynthConfig, timeline: Timeline, items: Items, tastes: Tastes,
             slot_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star ratings from taste match (leaf, brand, attributes) + user and item bias + logistic noise.

    The score is cut at its own quantiles so the star mix is the real one (``rating_shares``) whatever the
    preset; the planted preferences show as higher ratings on matching items. Returns (ratings, user biases).
    """
    slot_user = timeline.slot_user
    in_taste = (tastes.leaf[slot_user] == items.leaf[slot_item][:, None]).any(axis=1)
    brand_fav = (tastes.brand[slot_user] == items.brand[slot_item][:, None]).any(axis=1)
    overlap = tastes.item_attr[slot_item[:, None], tastes.attr[slot_user]].sum(axis=1)
    user_bias = 0.4 * rng.standard_normal(cfg.n_users)
    score = (1.2 * in_taste + 0.8 * brand_fav + 0.5 * overlap + user_bias[slot_user] + items.quality[slot_item]
             + rng.logistic(0.0, 0.6, timeline.n_slots))
    cuts = np.quantile(score, np.cumsum(cfg.rating_shares)[:-1])
    rating = 1 + np.searchsorted(cuts, score, side="right")
    return rating, user_bias


# ---- 8. write -----------------------------------------------------------------------------------------------------
def _write(rng: np.random.Generator, cfg: SynthConfig, seed: int, paths: writers.OutputPaths, cat: Catalogue,
           timeline: Timeline, items: Items, tastes: Tastes, slot_item: np.ndarray, rating: np.ndarray,
           user_bias: np.ndarray) -> int:
    """Draw the Amazon-looking ids, write reviews, metadata and truth; return the split time.

    The split time is the unixReviewTime of the first test row under the prepare definition (global sort by
    time, reviewer, asin; the first 70 % are training), recorded in the truth and the summary.
    """
    slot_user = timeline.slot_user
    user_ids = writers.amazon_ids(rng, cfg.n_users, "A", 13)
    asins = writers.amazon_ids(rng, cat.n_all, "B00", 7)
    unix = timeline.base_unix + timeline.slot_day * DAY
    paths.raw.mkdir(parents=True, exist_ok=True)
    paths.truth.parent.mkdir(parents=True, exist_ok=True)
    writers.write_reviews(rng, paths.reviews, slot_user, slot_item, rating, unix, user_ids, asins, items, cat.leaves)
    writers.write_meta(rng, paths.meta, cfg, asins, items, cat.leaves, cat.brands)
    order = np.lexsort((np.array(asins)[slot_item], np.array(user_ids)[slot_user], unix))
    split_unix = int(unix[order[int(timeline.n_slots * TRAIN_RATIO)]])
    writers.write_truth(paths.truth, cfg, seed, split_unix, cat, timeline, items, tastes, user_bias, asins, user_ids)
    return split_unix


def _reporter(enabled: bool) -> Callable[[str, str], None]:
    """``say(stage, detail)``: timed progress lines on stderr, or nothing."""
    if not enabled:
        return lambda stage, detail="": None
    console, t0 = Console(stderr=True), time.perf_counter()
    return lambda stage, detail="": console.print(f"[cyan]{time.perf_counter() - t0:6.1f}s[/] {stage:<9} {detail}")

