"""Raw review + metadata files → the processed dataset workspace (thesis §3.2).

Steps, top to bottom: read (malformed lines reported, never fatal) → keep interactions whose item has
metadata → one review per (user, item), **the latest** → global time sort → 70/30 split by position →
rating → weight → index spaces → training sequences → taxonomy → instruction-like catalog text flagged →
statistics. What was dropped, and why, is counted in ``processed/report.json`` and in ``stats.json``
(``dropped``), which ``data prepare`` and ``data stats`` print. A manifest of input hashes and settings
makes a re-run on unchanged inputs a no-op.

Why the latest review of a (user, item) pair: the thesis keeps one review per pair; a later review of the
same product (an edit, a re-review after use) is the user's current judgement of it, so its rating and
time are the ones kept (at equal times, the higher rating). How many duplicate pairs disagreed on the
rating is reported.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from coldlabel.config import DataSettings
from coldlabel.data.formats import (
    LineProblems,
    Meta,
    RawFiles,
    Review,
    find_raw_files,
    read_metadata,
    read_reviews,
)
from coldlabel.data.injection import flag_reason
from coldlabel.data.stats import compute_stats
from coldlabel.data.workspace import INTERACTION_COLUMNS, PATH_SEP, Workspace, file_hash
from coldlabel.errors import DataError

log = logging.getLogger(__name__)

PREPARE_VERSION = "2"  # bump when the processed format or the rules change: forces a rebuild
DUPLICATE_RULE = "latest review of a (user, item) pair kept"

@dataclass(frozen=True)
class PrepareResult:
    workspace: Workspace
    rebuilt: bool
    seconds: float
    malformed: int
    dropped: dict[str, int] | None = None  # what the rules removed, and why (stats.json "dropped")
    flagged: int = 0                       # items whose text reads like an instruction to a model


def weight_of(rating: float, cfg: DataSettings) -> float:
    """Rating → training weight: strong positive, weak positive, or 0 (not a positive, never a negative)."""
    if rating >= cfg.strong_rating:
        return cfg.strong_weight
    if rating >= cfg.weak_rating:
        return cfg.weak_weight
    return 0.0


def time_split(reviews: list[Review], train_ratio: float) -> tuple[list[Review], list[Review]]:
    """Global temporal split: sort everything by time (ties by user, item) and cut by position.

    A global cut (not per user) means no training row is later than any test row, so no future behaviour
    of other users leaks into training (the leave-one-out trap).
    """
    ordered = sorted(reviews, key=lambda r: (r.ts, r.user, r.item))
    cut = int(len(ordered) * train_ratio)
    return ordered[:cut], ordered[cut:]


def split_taxonomy(path: tuple[str, ...], cfg: DataSettings) -> tuple[str, str]:
    """(stage-2 category id, stage-3 subcategory id) for one category path.

    Category = levels 1..2; subcategory = the path cut at level 4 (id keeps its parents so equal names under
    different categories stay apart). Paths too short for a subcategory level get the category itself.
    """
    if not path:
        return "Other", "Other"
    c_hi = cfg.category_levels[-1]
    s_hi = cfg.subcategory_levels[-1]
    category = PATH_SEP.join(path[:c_hi])
    sub = PATH_SEP.join(path[:s_hi]) if len(path) >= cfg.subcategory_levels[0] else category
    return category, sub


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def adopt_raw(ws: Workspace, source: Path, edition: str | None = None) -> RawFiles:
    """Use the reviews + metadata files in ``source`` (``data prepare --raw DIR``): they are linked into the
    workspace's ``raw/`` (copied where links are not possible), so later commands find them there.
    Links left by an earlier ``--raw`` are replaced; a real file already in ``raw/`` is never overwritten."""
    if not source.is_dir():
        raise DataError(f"--raw {source}: no such directory")
    found = find_raw_files(source, edition)
    ws.raw.mkdir(parents=True, exist_ok=True)
    if ws.raw.resolve() == source.resolve():
        return found
    wanted = {found.reviews.name: found.reviews, found.meta.name: found.meta}
    for entry in sorted(ws.raw.iterdir()):
        if not entry.name.endswith((".json", ".json.gz")):
            continue
        if not entry.is_symlink():
            raise DataError(f"{entry} is already in the workspace (not a link from --raw); use another --dataset "
                            f"name, or move it away to prepare {source} here")
        entry.unlink()
    for name, src in wanted.items():
        target = ws.raw / name
        try:
            target.symlink_to(src.resolve())
        except OSError:
            shutil.copy2(src, target)
    return find_raw_files(ws.raw, edition)


def _manifest(ws: Workspace, cfg: DataSettings) -> dict:
    files = find_raw_files(ws.raw, cfg.edition)
    return {
        "version": PREPARE_VERSION,
        "edition": files.edition,
        "inputs": {p.name: file_hash(p) for p in (files.reviews, files.meta)},
        "settings": cfg.model_dump(exclude={"root"}),
    }


def is_up_to_date(ws: Workspace, cfg: DataSettings) -> bool:
    manifest = ws.processed / "manifest.json"
    if not manifest.exists():
        return False
    try:
        return json.loads(manifest.read_text()) == _manifest(ws, cfg)
    except json.JSONDecodeError:
        return False


def prepare(ws: Workspace, cfg: DataSettings, force: bool = False) -> PrepareResult:
    """Build ``ws.processed`` from ``ws.raw``; a no-op when inputs and settings are unchanged."""
    started = time.perf_counter()
    manifest = _manifest(ws, cfg)
    if not force and is_up_to_date(ws, cfg):
        log.info("%s: processed data is up to date (inputs unchanged), nothing to do", ws.name)
        return PrepareResult(ws, False, time.perf_counter() - started, 0)

    files = find_raw_files(ws.raw, cfg.edition)
    problems = LineProblems()
    metas: dict[str, Meta] = {m.asin: m for m in read_metadata(files.meta, problems, cfg.description_chars,
                                                               files.edition)}
    raw_reviews = list(read_reviews(files.reviews, problems))
    if problems.total:
        log.warning("%s: %d malformed lines skipped (first: %s); see processed/report.json",
                    ws.name, problems.total, problems.examples[0])
    if not metas:
        first = next((e for e in problems.examples if e["file"] == files.meta.name), None)
        raise DataError(f"{files.meta}: no readable metadata record"
                        + (f" (line {first['line']}: {first['reason']}); is it the {files.edition} edition? "
                           "(--edition 2014|2018)" if first else ""))

    # Keep interactions with metadata; one review per (user, item): the latest (module docstring).
    kept: dict[tuple[str, str], Review] = {}
    ratings: dict[tuple[str, str], set[float]] = {}
    no_meta_items: set[str] = set()
    no_meta = duplicates = 0
    for r in raw_reviews:
        if r.item not in metas:
            no_meta += 1
            no_meta_items.add(r.item)
            continue
        key = (r.user, r.item)
        ratings.setdefault(key, set()).add(r.rating)
        old = kept.get(key)
        if old is not None:
            duplicates += 1
        if old is None or (r.ts, r.rating) > (old.ts, old.rating):
            kept[key] = r
    reviews = list(kept.values())
    rating_conflicts = sum(1 for values in ratings.values() if len(values) > 1)
    if not reviews:
        raise DataError(f"{files.reviews}: no usable interactions (malformed {problems.total}, "
                        f"without metadata {no_meta})")

    train, test = time_split(reviews, cfg.train_ratio)

    # Index spaces shared by every later stage: order of first appearance in time.
    user2idx: dict[str, int] = {}
    item2idx: dict[str, int] = {}
    for r in train + test:
        user2idx.setdefault(r.user, len(user2idx))
        item2idx.setdefault(r.item, len(item2idx))

    ws.processed.mkdir(parents=True, exist_ok=True)
    (ws.processed / "manifest.json").unlink(missing_ok=True)  # an interrupted rebuild is never "up to date"

    rows: dict[str, list[tuple]] = {}
    for split, part in (("train", train), ("test", test)):
        lines = ["\t".join(INTERACTION_COLUMNS)]
        rows[split] = []
        for r in part:
            w = weight_of(r.rating, cfg)
            rows[split].append((r.user, r.item, w))
            lines.append(f"{r.user}\t{r.item}\t{user2idx[r.user]}\t{item2idx[r.item]}\t{r.ts}\t{r.rating:g}\t{w:g}")
        _write_atomic(ws.processed / f"{split}.tsv", "\n".join(lines) + "\n")

    sequences: dict[int, list[int]] = defaultdict(list)
    for r in train:  # already time-ordered
        if weight_of(r.rating, cfg) > 0:
            sequences[user2idx[r.user]].append(item2idx[r.item])

    item_lines = []
    flagged: list[dict] = []
    categories: dict[str, list[str]] = {}
    sub_items: dict[str, list[int]] = defaultdict(list)
    item_sub: dict[str, str] = {}
    for asin, idx in item2idx.items():
        m = metas[asin]
        reason = flag_reason(m.title, m.brand, m.description, PATH_SEP.join(m.category_path))
        if reason:
            flagged.append({"idx": idx, "asin": asin, "reason": reason, "title": m.title[:120]})
        item_lines.append(json.dumps({
            "idx": idx, "asin": asin, "title": m.title, "description": m.description, "brand": m.brand,
            "category_path": list(m.category_path),
            "text": f"{m.title} | {PATH_SEP.join(m.category_path)}" if m.category_path else m.title,
            "flagged": reason,
        }, ensure_ascii=False))
        category, sub = split_taxonomy(m.category_path, cfg)
        subs = categories.setdefault(category, [])
        if sub not in subs:
            subs.append(sub)
        sub_items[sub].append(idx)
        item_sub[str(idx)] = sub

    taxonomy = {
        "category_levels": cfg.category_levels,
        "subcategory_levels": cfg.subcategory_levels,
        "categories": sorted(categories),
        "subcategories": {c: sorted(s) for c, s in sorted(categories.items())},
        "subcategory_items": {s: items for s, items in sorted(sub_items.items())},
        "item_subcategory": item_sub,
    }
    table = compute_stats(rows["train"], rows["test"])
    n_train_users = table["Users in training split"]
    n_test_users = table["Users in test split"]
    dropped = {
        "malformed lines": problems.total,
        "reviews of items without metadata": no_meta,
        "items without metadata": len(no_meta_items),
        "duplicate reviews (latest kept)": duplicates,
        "duplicate pairs with different ratings": rating_conflicts,
    }
    stats = {
        "dataset": ws.name,
        "edition": files.edition,
        "files": [files.reviews.name, files.meta.name],
        "table": table,
        "dropped": dropped,
        "flagged_items": len(flagged),
        "extra": {
            "items": len(item2idx),
            "users": len(user2idx),
            "categories": len(categories),
            "subcategories": len(sub_items),
            "avg train interactions per train user": round(len(train) / max(n_train_users, 1), 2),
            "avg test interactions per test user": round(len(test) / max(n_test_users, 1), 2),
        },
    }
    report = {
        "malformed_lines": problems.total,
        "malformed_by_file": problems.counts,
        "malformed_examples": problems.examples,
        "reviews_read": len(raw_reviews),
        "dropped_without_metadata": no_meta,
        "items_without_metadata": len(no_meta_items),
        "items_without_metadata_examples": sorted(no_meta_items)[:50],
        "dropped_duplicates": duplicates,
        "duplicate_rule": DUPLICATE_RULE,
        "duplicate_pairs_with_different_ratings": rating_conflicts,
        "items_with_metadata": len(metas),
        "flagged_items": len(flagged),
        "flagged_by_rule": _count_rules(flagged),
        "flagged": flagged,
    }
    _write_atomic(ws.processed / "items.jsonl", "\n".join(item_lines) + "\n")
    _write_atomic(ws.processed / "mappings.json", json.dumps({"user2idx": user2idx, "item2idx": item2idx}))
    _write_atomic(ws.processed / "sequences.json", json.dumps({str(u): s for u, s in sequences.items()}))
    _write_atomic(ws.processed / "taxonomy.json", json.dumps(taxonomy, ensure_ascii=False))
    _write_atomic(ws.processed / "stats.json", json.dumps(stats, indent=2))
    _write_atomic(ws.processed / "report.json", json.dumps(report, indent=2))
    _write_atomic(ws.processed / "manifest.json", json.dumps(manifest, indent=2))  # last: marks completion
    seconds = time.perf_counter() - started
    log.info("%s: prepared %d interactions (%d train / %d test), %d items, %d users in %.1fs",
             ws.name, len(reviews), len(train), len(test), len(item2idx), len(user2idx), seconds)
    return PrepareResult(ws, True, seconds, problems.total, dropped, len(flagged))


def _count_rules(flagged: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in flagged:
        rule = f["reason"].split(":", 1)[0]
        counts[rule] = counts.get(rule, 0) + 1
    return counts
