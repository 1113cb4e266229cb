"""The synthetic benchmark: Amazon-2014 file format, 5-core, planted cold items and tastes, determinism."""
from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from coldlabel.data import synth
from coldlabel.data.formats import LineProblems, read_metadata, read_reviews

TINY = "tiny"


def _reviews(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _meta(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [ast.literal_eval(line) for line in fh]


def _truth(path: Path) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _split(reviews: list[dict]) -> tuple[list[dict], list[dict]]:
    """The prepare definition: global sort by (time, user, item), first floor(0.7 n) rows are training."""
    ordered = sorted(reviews, key=lambda r: (r["unixReviewTime"], r["reviewerID"], r["asin"]))
    cut = int(len(ordered) * synth.TRAIN_RATIO)
    return ordered[:cut], ordered[cut:]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> synth.SynthSummary:
    return synth.generate(TINY, tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def tiny_data(tiny) -> tuple[list[dict], list[dict], dict]:
    return _reviews(tiny.reviews_path), _meta(tiny.meta_path), _truth(tiny.truth_path)


# ---- determinism -----------------------------------------------------------------------------------------------
def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tiny, tmp_path):
    again = synth.generate(TINY, tmp_path / "again", seed=0)
    other = synth.generate(TINY, tmp_path / "other", seed=1)
    for name in ("reviews_path", "meta_path", "truth_path"):
        assert getattr(again, name).read_bytes() == getattr(tiny, name).read_bytes(), name
        assert getattr(other, name).read_bytes() != getattr(tiny, name).read_bytes(), name


# ---- file format ---------------------------------------------------------------------------------------------
def test_layout_and_file_names(tiny):
    root = tiny.reviews_path.parent.parent
    assert tiny.reviews_path == root / "raw" / "reviews_Beauty_5.json.gz"
    assert tiny.meta_path == root / "raw" / "meta_Beauty.json.gz"
    assert tiny.truth_path == root / "truth" / "truth.json.gz"
    assert tiny.reviews_path.read_bytes()[:2] == b"\x1f\x8b"


def test_reviews_are_2014_json_lines(tiny_data):
    reviews, _, _ = tiny_data
    keys = {"reviewerID", "asin", "reviewerName", "helpful", "reviewText", "overall", "summary",
            "unixReviewTime", "reviewTime"}
    for r in reviews:
        assert set(r) == keys
        assert isinstance(r["overall"], float) and r["overall"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert isinstance(r["unixReviewTime"], int) and r["unixReviewTime"] % 86400 == 0
        day = dt.datetime.fromtimestamp(r["unixReviewTime"], dt.UTC)
        assert r["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"
        assert re.fullmatch(r"A[A-Z0-9]{13}", r["reviewerID"]) and re.fullmatch(r"B00[A-Z0-9]{7}", r["asin"])
        assert r["helpful"] == [0, 0] and r["reviewText"] and r["summary"]


def test_meta_is_python_literal_with_category_chains(tiny):
    with gzip.open(tiny.meta_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert lines and all(line.startswith("{'asin': '") for line in lines)  # repr(dict), not JSON
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])
    chain_counts = Counter()
    for line in lines:
        rec = ast.literal_eval(line)
        assert {"asin", "title", "categories", "brand", "imUrl"} <= set(rec)
        cats = rec["categories"]
        assert isinstance(cats, list) and all(isinstance(c, list) and all(isinstance(x, str) for x in c)
                                              for c in cats)
        longest = max(cats, key=len)
        assert longest[0] == "Beauty" and len(longest) in (3, 4)
        assert sum(len(c) == len(longest) for c in cats) == 1  # the longest chain is unambiguous
        chain_counts[len(cats)] += 1
    assert chain_counts[1] and chain_counts[2]  # both single and cross-listed items occur


def test_the_project_loader_reads_every_line(tiny):
    problems = LineProblems()
    reviews = list(read_reviews(tiny.reviews_path, problems))
    metas = list(read_metadata(tiny.meta_path, problems, description_chars=200))
    assert problems.total == 0, problems.examples
    assert len(reviews) == tiny.n_reviews and len(metas) == tiny.n_meta_items


# ---- 5-core, uniqueness ------------------------------------------------------------------------------------------
def test_five_core_and_one_review_per_user_item(tiny, tiny_data):
    reviews, _, _ = tiny_data
    users = Counter(r["reviewerID"] for r in reviews)
    items = Counter(r["asin"] for r in reviews)
    assert min(users.values()) >= 5 and min(items.values()) >= 5
    assert len({(r["reviewerID"], r["asin"]) for r in reviews}) == len(reviews)
    assert (len(reviews), len(users), len(items)) == (tiny.n_reviews, tiny.n_users, tiny.n_items)


# ---- taxonomy definitions (both presets' trees, not only the tiny sample) ----------------------------------------
@pytest.mark.parametrize("kind,root", [("beauty", "Beauty"), ("health", "Health & Personal Care")])
def test_taxonomy_is_deep_and_wide(kind, root):
    leaves = synth.taxonomy(kind)
    depths = Counter(len(lf.path) for lf in leaves)
    assert len(leaves) >= 150
    assert max(depths) >= 4 and depths[3] > 0  # 4-level paths, and some 3-level ones like the real data
    assert all(lf.path[0] == root for lf in leaves)
    assert len({lf.path for lf in leaves}) == len(leaves)
    assert all(lf.product_type and synth.attribute_pool(lf)["features"] for lf in leaves)


def test_beauty_tree_has_the_familiar_paths():
    paths = {lf.path for lf in synth.taxonomy("beauty")}
    assert ("Beauty", "Skin Care", "Face", "Moisturizers") in paths
    assert ("Beauty", "Hair Care", "Shampoos") in paths
    assert ("Beauty", "Makeup", "Eyes", "Mascara") in paths
    health = {lf.path for lf in synth.taxonomy("health")}
    assert ("Health & Personal Care", "Vitamins & Dietary Supplements", "Minerals", "Magnesium") in health


# ---- planted cold items ---------------------------------------------------------------------------------------------
def test_cold_items_exist_and_only_appear_after_the_time_cut(tiny, tiny_data):
    reviews, _, truth = tiny_data
    planted = {a for a, it in truth["items"].items() if it["cold"]}
    assert len(planted) == tiny.n_cold_items > 0
    train, test = _split(reviews)
    train_items = {r["asin"] for r in train}
    strict_cold = {r["asin"] for r in test} - train_items
    assert strict_cold == planted  # cold by the prepare definition == released after the cut
    cut_time = test[0]["unixReviewTime"]
    assert truth["split_unix_time"] == cut_time == tiny.split_unix_time
    for r in reviews:
        if r["asin"] in planted:
            assert r["unixReviewTime"] > cut_time
            assert truth["items"][r["asin"]]["release_unix_time"] <= r["unixReviewTime"]


def test_no_review_before_its_item_release(tiny_data):
    reviews, _, truth = tiny_data
    assert all(truth["items"][r["asin"]]["release_unix_time"] <= r["unixReviewTime"] for r in reviews)


# ---- truth consistency, item text ---------------------------------------------------------------------------------
def test_truth_covers_reviews_and_meta(tiny_data):
    reviews, meta, truth = tiny_data
    assert {r["asin"] for r in reviews} <= set(truth["items"])
    assert {r["reviewerID"] for r in reviews} == set(truth["users"])
    assert {m["asin"] for m in meta} == set(truth["items"])
    reviewed = {r["asin"] for r in reviews}
    assert reviewed == {a for a, it in truth["items"].items() if it["reviewed"]}
    for m in meta:
        assert max(m["categories"], key=len) == truth["items"][m["asin"]]["leaf"]
    for u in truth["users"].values():
        assert u["leaves"] and len(u["leaves"]) == len(u["leaf_weights_start"]) == len(u["leaf_weights_end"])
        assert u["brands"] and u["window_unix_time"][0] <= u["window_unix_time"][1]


def test_titles_carry_brand_and_product_type(tiny_data):
    _, meta, truth = tiny_data
    leaf_types = {tuple(lf["path"]): lf["product_type"] for lf in truth["leaves"]}
    for m in meta:
        it = truth["items"][m["asin"]]
        assert m["brand"] == it["brand"]
        assert m["title"].startswith(it["brand"] + " ")
        assert it["product_type"] == leaf_types[tuple(it["leaf"])]
        assert it["product_type"] in m["title"]


# ---- planted preferences show in the ratings --------------------------------------------------------------------
def test_ratings_are_higher_when_the_item_matches_the_users_taste(tiny_data):
    reviews, _, truth = tiny_data
    match, other = [], []
    for r in reviews:
        user, item = truth["users"][r["reviewerID"]], truth["items"][r["asin"]]
        (match if item["leaf"] in user["leaves"] else other).append(r["overall"])
    match, other = np.array(match), np.array(other)
    assert len(match) > len(other) > 30  # most reviews follow taste, exploration still happens
    stderr = np.sqrt(match.var() / len(match) + other.var() / len(other))
    assert match.mean() - other.mean() > 3 * stderr


def test_rating_mix_is_mostly_positive(tiny_data):
    reviews, _, _ = tiny_data
    ratings = Counter(int(r["overall"]) for r in reviews)
    assert set(ratings) == {1, 2, 3, 4, 5}
    positive = (ratings[3] + ratings[4] + ratings[5]) / len(reviews)
    assert 0.8 < positive < 0.95 and ratings[5] > ratings[4] > ratings[3]


# ---- health-like taxonomy and bad input ------------------------------------------------------------------------------
def test_health_taxonomy_files(tmp_path, monkeypatch):
    cfg = dataclasses.replace(synth.PRESETS[TINY], name="tiny_health", category="Health_and_Personal_Care",
                              taxonomy="health")
    monkeypatch.setitem(synth.PRESETS, "tiny_health", cfg)
    summary = synth.generate("tiny_health", tmp_path, seed=3)
    assert summary.reviews_path.name == "reviews_Health_and_Personal_Care_5.json.gz"
    meta = _meta(summary.meta_path)
    assert {max(m["categories"], key=len)[0] for m in meta} == {"Health & Personal Care"}
    items = Counter(r["asin"] for r in _reviews(summary.reviews_path))
    assert min(items.values()) >= 5


def test_unknown_preset_is_named_in_the_error(tmp_path):
    with pytest.raises(ValueError, match="'huge'.*tiny"):
        synth.generate("huge", tmp_path)
    assert not (tmp_path / "raw").exists()


def test_refuses_to_mix_with_another_datasets_raw_files(tmp_path):
    (tmp_path / "raw").mkdir()
    other = tmp_path / "raw" / "reviews_Health_and_Personal_Care_5.json.gz"
    other.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="reviews_Health_and_Personal_Care_5"):
        synth.generate(TINY, tmp_path)
    assert other.read_bytes() == b"keep me"


def test_presets_scale_up():
    p = synth.PRESETS
    assert p["tiny"].n_users < p["small"].n_users < p["beauty"].n_users < p["health"].n_users
    assert p["beauty"].category == "Beauty" and p["health"].category == "Health_and_Personal_Care"
