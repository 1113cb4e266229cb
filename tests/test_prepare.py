"""Data preparation on hand-written raw files in both Amazon editions."""
import gzip
import json
import os

import pytest

from coldlabel.config import load_settings
from coldlabel.data.formats import find_raw_files
from coldlabel.data.prepare import prepare
from coldlabel.data.stats import TABLE_ROWS
from coldlabel.data.workspace import Workspace, WorkspaceError
from coldlabel.errors import DataError

CFG = load_settings(environ={}).data

# Ten interactions at distinct times. Sorted by time, the first 7 are train, the last 3 test.
#  t  user item rating
ROWS = [
    (1, "U1", "A", 5), (2, "U1", "B", 3), (3, "U2", "A", 4), (4, "U2", "C", 2), (5, "U3", "B", 5),
    (6, "U1", "C", 4), (7, "U3", "A", 1),
    (8, "U2", "D", 5), (9, "U4", "A", 3), (10, "U4", "D", 4),
]
META = {
    "A": ("Gentle Cleanser", [["Beauty", "Skin Care", "Face", "Cleansers"], ["Beauty"]]),
    "B": ("Volume Mascara", [["Beauty", "Makeup", "Eyes", "Mascara"]]),
    "C": ("Hair Oil", [["Beauty", "Hair Care", "Styling"]]),
    "D": ("New Night Cream", [["Beauty", "Skin Care", "Face", "Moisturizers", "Night"]]),
}


def write_2014(raw, extra_review_lines=(), extra_meta_lines=(), gz=True):
    raw.mkdir(parents=True, exist_ok=True)
    opener = (lambda p: gzip.open(p, "wt")) if gz else (lambda p: open(p, "w"))
    suffix = ".gz" if gz else ""
    with opener(raw / f"reviews_Beauty_5.json{suffix}") as fh:
        for t, u, i, r in ROWS:
            fh.write(json.dumps({"reviewerID": u, "asin": i, "overall": float(r), "unixReviewTime": t}) + "\n")
        for line in extra_review_lines:
            fh.write(line + "\n")
    with opener(raw / f"meta_Beauty.json{suffix}") as fh:
        for asin, (title, cats) in META.items():
            fh.write(repr({"asin": asin, "title": title, "categories": cats, "description": "Nice\n  stuff"}) + "\n")
        for line in extra_meta_lines:
            fh.write(line + "\n")


def write_2018(raw):
    raw.mkdir(parents=True, exist_ok=True)
    with open(raw / "Beauty_5.json", "w") as fh:
        for t, u, i, r in ROWS:
            fh.write(json.dumps({"reviewerID": u, "asin": i, "overall": r, "unixReviewTime": t, "verified": True}) + "\n")
    with gzip.open(raw / "meta_Beauty.json.gz", "wt") as fh:
        for asin, (title, cats) in META.items():
            longest = max(cats, key=len)
            fh.write(json.dumps({"asin": asin, "title": title, "category": longest,
                                 "description": ["Nice", "stuff"], "brand": "Acme"}) + "\n")


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "toy")


def check_toy(ws):
    train, test = ws.train, ws.test
    assert [(x.user, x.item) for x in train] == [(u, i) for _, u, i, _ in ROWS[:7]]
    assert [(x.user, x.item) for x in test] == [(u, i) for _, u, i, _ in ROWS[7:]]
    # rating -> weight: >=4 strong 1.0, 3 weak 0.3, <3 not a positive
    assert {(x.user, x.item): x.weight for x in train + test} == {
        ("U1", "A"): 1.0, ("U1", "B"): 0.3, ("U2", "A"): 1.0, ("U2", "C"): 0.0, ("U3", "B"): 1.0,
        ("U1", "C"): 1.0, ("U3", "A"): 0.0, ("U2", "D"): 1.0, ("U4", "A"): 0.3, ("U4", "D"): 1.0}
    assert ws.cold_items == {ws.mappings["item2idx"]["D"]}
    table = ws.stats["table"]
    assert list(table) == list(TABLE_ROWS)
    assert table == {
        "Effective interactions (final)": 10, "Training interactions (time split)": 7,
        "Test interactions (time split)": 3, "Training positives / weak positives": 5,
        "Test positives / weak positives": 3, "Cold items": 1, "Cold users": 1,
        "Cold-item ratio in unique test items": 50.0, "Users in training split": 3,
        "Users in test split": 2, "Users appearing in both splits": 1}
    # training sequences: time-ordered positives only
    idx = ws.mappings["item2idx"]
    u1 = ws.mappings["user2idx"]["U1"]
    assert ws.sequences[u1] == [idx["A"], idx["B"], idx["C"]]
    assert ws.sequences[ws.mappings["user2idx"]["U3"]] == [idx["B"]]
    # item texts: title | longest category path; cleaned description
    items = {it.asin: it for it in ws.items}
    assert items["A"].text == "Gentle Cleanser | Beauty > Skin Care > Face > Cleansers"
    assert items["A"].description == "Nice stuff"


def test_2014_format(ws):
    write_2014(ws.raw)
    assert find_raw_files(ws.raw).edition == "2014"
    prepare(ws, CFG)
    check_toy(ws)


def test_2014_uncompressed(ws):
    write_2014(ws.raw, gz=False)
    prepare(ws, CFG)
    check_toy(ws)


def test_2018_format(ws):
    write_2018(ws.raw)
    assert find_raw_files(ws.raw).edition == "2018"
    prepare(ws, CFG)
    check_toy(ws)
    assert all(it.brand == "Acme" for it in ws.items)


def test_taxonomy_levels(ws):
    write_2014(ws.raw)
    prepare(ws, CFG)
    tax = ws.taxonomy
    assert tax["categories"] == ["Beauty > Hair Care", "Beauty > Makeup", "Beauty > Skin Care"]
    assert tax["subcategories"]["Beauty > Skin Care"] == [
        "Beauty > Skin Care > Face > Cleansers", "Beauty > Skin Care > Face > Moisturizers"]
    # a 3-level path: the subcategory is cut at level 3
    assert tax["subcategories"]["Beauty > Hair Care"] == ["Beauty > Hair Care > Styling"]
    idx = ws.mappings["item2idx"]
    assert tax["item_subcategory"][str(idx["D"])] == "Beauty > Skin Care > Face > Moisturizers"
    assert tax["subcategory_items"]["Beauty > Makeup > Eyes > Mascara"] == [idx["B"]]


def test_malformed_lines_are_reported_not_fatal(ws):
    write_2014(ws.raw,
               extra_review_lines=['{"reviewerID": "U9", "asin": "A"', '{"asin": "A", "overall": 5}',
                                   '{"reviewerID": "U9", "asin": "A", "overall": "five", "unixReviewTime": 3}',
                                   "[1, 2]"],
               extra_meta_lines=["{'asin': 'Z', 'title': 'broken", "{'title': 'no asin'}"])
    result = prepare(ws, CFG)
    assert result.malformed == 6
    check_toy(ws)  # the good lines are all there
    report = json.loads((ws.processed / "report.json").read_text())
    assert report["malformed_by_file"] == {"reviews_Beauty_5.json.gz": 4, "meta_Beauty.json.gz": 2}
    lines = {(e["file"], e["line"]) for e in report["malformed_examples"]}
    assert ("reviews_Beauty_5.json.gz", 11) in lines and ("reviews_Beauty_5.json.gz", 14) in lines
    assert ("meta_Beauty.json.gz", 5) in lines and ("meta_Beauty.json.gz", 6) in lines
    reasons = " ".join(e["reason"] for e in report["malformed_examples"])
    assert "missing field 'reviewerID'" in reasons and "invalid JSON" in reasons


def test_items_without_metadata_and_duplicates_are_dropped_and_counted(ws):
    write_2014(ws.raw, extra_review_lines=[
        json.dumps({"reviewerID": "U1", "asin": "NOMETA", "overall": 5.0, "unixReviewTime": 11}),
        json.dumps({"reviewerID": "U1", "asin": "A", "overall": 1.0, "unixReviewTime": 12})])
    prepare(ws, CFG)
    report = json.loads((ws.processed / "report.json").read_text())
    assert report["dropped_without_metadata"] == 1 and report["dropped_duplicates"] == 1
    check_toy(ws)


def test_rerun_is_a_noop_and_changed_input_rebuilds(ws):
    write_2014(ws.raw)
    assert prepare(ws, CFG).rebuilt
    stamp = os.stat(ws.processed / "train.tsv").st_mtime_ns
    assert not prepare(ws, CFG).rebuilt
    assert os.stat(ws.processed / "train.tsv").st_mtime_ns == stamp
    # a changed setting rebuilds
    other = CFG.model_copy(update={"train_ratio": 0.5})
    assert prepare(ws, other).rebuilt
    assert len(Workspace(ws.root).train) == 5
    # a changed input rebuilds
    write_2014(ws.raw, extra_review_lines=[json.dumps(
        {"reviewerID": "U5", "asin": "B", "overall": 4.0, "unixReviewTime": 20})])
    assert prepare(ws, other).rebuilt
    assert len(Workspace(ws.root).test) == 6


def test_interrupted_rebuild_is_not_up_to_date(ws):
    write_2014(ws.raw)
    prepare(ws, CFG)
    (ws.processed / "manifest.json").unlink()  # as if the process died before the manifest was written
    assert prepare(ws, CFG).rebuilt


def test_missing_inputs_and_corrupt_outputs_are_clear(ws, tmp_path):
    with pytest.raises(DataError, match="coldlabel data synth"):
        prepare(ws, CFG)
    write_2014(ws.raw)
    (ws.raw / "meta_Beauty.json.gz").unlink()
    with pytest.raises(DataError, match="meta_Beauty"):
        prepare(ws, CFG)
    write_2014(ws.raw)
    prepare(ws, CFG)
    (ws.processed / "taxonomy.json").write_text("{not json")
    with pytest.raises(WorkspaceError, match="taxonomy.json is corrupted"):
        Workspace(ws.root).taxonomy
    with pytest.raises(WorkspaceError, match="missing"):
        Workspace(tmp_path / "nothing").items
