"""Data preparation on hand-written raw files in both Amazon editions."""
import gzip
import json
import os

import pytest

from coldlabel.config import load_settings
from coldlabel.data.formats import clean_text, find_raw_files
from coldlabel.data.prepare import adopt_raw, prepare
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
        json.dumps({"reviewerID": "U2", "asin": "NOMETA2", "overall": 4.0, "unixReviewTime": 11}),
        json.dumps({"reviewerID": "U3", "asin": "NOMETA2", "overall": 4.0, "unixReviewTime": 12}),
        json.dumps({"reviewerID": "U4", "asin": "D", "overall": 4.0, "unixReviewTime": 10})])  # same rating
    result = prepare(ws, CFG)
    report = json.loads((ws.processed / "report.json").read_text())
    assert report["dropped_without_metadata"] == 3 and report["items_without_metadata"] == 2
    assert report["items_without_metadata_examples"] == ["NOMETA", "NOMETA2"]
    assert report["dropped_duplicates"] == 1 and report["duplicate_pairs_with_different_ratings"] == 0
    check_toy(ws)
    # the counts reach stats.json (what `data prepare` and `data stats` print), not only report.json
    assert ws.stats["dropped"] == result.dropped == {
        "malformed lines": 0, "reviews of items without metadata": 3, "items without metadata": 2,
        "duplicate reviews (latest kept)": 1, "duplicate pairs with different ratings": 0}


def test_duplicate_reviews_keep_the_latest_even_when_ratings_differ(ws):
    # U1 reviewed A at t=1 with 5 stars, then again at t=12 with 1 star: the later judgement is kept.
    write_2014(ws.raw, extra_review_lines=[
        json.dumps({"reviewerID": "U1", "asin": "A", "overall": 1.0, "unixReviewTime": 12})])
    prepare(ws, CFG)
    rows = {(x.user, x.item): x for x in ws.train + ws.test}
    assert len(rows) == len(ROWS) == len(ws.train) + len(ws.test)
    assert (rows["U1", "A"].rating, rows["U1", "A"].ts, rows["U1", "A"].weight) == (1.0, 12, 0.0)
    assert ws.stats["dropped"]["duplicate reviews (latest kept)"] == 1
    assert ws.stats["dropped"]["duplicate pairs with different ratings"] == 1
    report = json.loads((ws.processed / "report.json").read_text())
    assert report["duplicate_rule"] == "latest review of a (user, item) pair kept"


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


# ---- HTML cleaning --------------------------------------------------------------------------------

def test_html_cleaner_strips_tags_but_keeps_comparison_signs(ws):
    assert clean_text("pets < 20 lb, fits > 10 lb breeds") == "pets < 20 lb, fits > 10 lb breeds"
    assert clean_text("5<10 and 20>15, a <= b") == "5<10 and 20>15, a <= b"
    assert clean_text('<p class="x">Soft<br/>coat</p><!-- note --><o:p></o:p> &amp; shine') == "Soft coat & shine"
    assert clean_text("escaped &lt;b&gt; stays text") == "escaped <b> stays text"
    # through prepare, as the pipeline sees it
    write_2014(ws.raw, extra_meta_lines=[repr({"asin": "A", "title": "Crate <b>for</b> pets < 20 lb, fits > 10 lb breeds",
                                               "categories": [["Beauty", "Skin Care"]]})])
    prepare(ws, CFG)
    assert {it.asin: it.title for it in ws.items}["A"] == "Crate for pets < 20 lb, fits > 10 lb breeds"


# ---- file names, editions, your own raw directory --------------------------------------------------

def _rename(raw, old, new):
    (raw / old).rename(raw / new)


@pytest.mark.parametrize("reviews, edition", [
    ("Beauty.json.gz", "2018"),             # the full 2018 dump (not the 5-core)
    ("Beauty_5.json.gz", "2018"),
    ("reviews_Beauty.json.gz", "2014"),     # the full 2014 dump
    ("reviews_Beauty_5.json.gz", "2014"),
])
def test_both_editions_full_and_5core_names_are_found(ws, reviews, edition):
    write_2014(ws.raw)
    _rename(ws.raw, "reviews_Beauty_5.json.gz", reviews)
    found = find_raw_files(ws.raw)
    assert (found.reviews.name, found.meta.name, found.edition, found.category) == (
        reviews, "meta_Beauty.json.gz", edition, "Beauty")


def test_full_2018_dump_names_prepare(ws):
    write_2018(ws.raw)
    _rename(ws.raw, "Beauty_5.json", "Pet_Supplies.json")
    _rename(ws.raw, "meta_Beauty.json.gz", "meta_Pet_Supplies.json.gz")
    prepare(ws, CFG)
    check_toy(ws)
    assert ws.stats["edition"] == "2018" and ws.stats["files"] == ["Pet_Supplies.json", "meta_Pet_Supplies.json.gz"]


def test_wrong_names_list_what_is_expected_and_what_is_there(ws):
    write_2014(ws.raw)
    _rename(ws.raw, "reviews_Beauty_5.json.gz", "beauty-reviews.jsonl.gz")
    with pytest.raises(DataError, match=r"reviews_<Category>_5\.json\[\.gz\].*<Category>\.json\[\.gz\].*"
                                        r"beauty-reviews\.jsonl\.gz"):
        find_raw_files(ws.raw)


def test_edition_override_reads_2018_metadata_as_json_only(ws):
    # 2018 content under 2014-style names: auto-detection says 2014, --edition 2018 says otherwise
    write_2018(ws.raw)
    _rename(ws.raw, "Beauty_5.json", "reviews_Beauty_5.json")
    assert find_raw_files(ws.raw).edition == "2014"
    assert find_raw_files(ws.raw, "2018").edition == "2018"
    prepare(ws, CFG.model_copy(update={"edition": "2018"}))
    check_toy(ws)
    assert ws.stats["edition"] == "2018"


def test_malformed_2018_json_line_is_a_json_error_with_its_line(ws):
    write_2018(ws.raw)
    with gzip.open(ws.raw / "meta_Beauty.json.gz", "at") as fh:
        fh.write('{"asin": "Z", "title": "broken", "category": ["Beauty"]\n')
    result = prepare(ws, CFG)
    assert result.malformed == 1
    report = json.loads((ws.processed / "report.json").read_text())
    [problem] = report["malformed_examples"]
    assert (problem["file"], problem["line"]) == ("meta_Beauty.json.gz", 5)
    assert problem["reason"].startswith("unreadable record: invalid JSON: Expecting")
    assert "SyntaxError" not in problem["reason"]


def test_2014_python_literal_that_is_broken_says_so_without_python_internals(ws):
    write_2014(ws.raw, extra_meta_lines=["{'asin': 'Z', 'title': 'broken"])
    prepare(ws, CFG)
    [problem] = json.loads((ws.processed / "report.json").read_text())["malformed_examples"]
    assert "neither JSON nor a Python literal" in problem["reason"] and "SyntaxError" not in problem["reason"]


def test_2018_metadata_read_as_the_wrong_edition_is_a_clear_error(ws):
    write_2014(ws.raw)  # Python-literal metadata
    with pytest.raises(DataError, match=r"meta_Beauty\.json\.gz: no readable metadata record \(line 1: .*invalid "
                                        r"JSON.*--edition 2014\|2018"):
        prepare(ws, CFG.model_copy(update={"edition": "2018"}))


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_truncated_gzip_is_a_data_error_naming_the_file(ws):
    write_2014(ws.raw, extra_review_lines=[json.dumps({"reviewerID": f"X{i}", "asin": "A", "overall": 4.0,
                                                       "unixReviewTime": 100 + i, "reviewText": f"text {i} " * 20})
                                           for i in range(300)])
    path = ws.raw / "reviews_Beauty_5.json.gz"
    _truncate(path, len(path.read_bytes()) // 2)
    with pytest.raises(DataError, match=r"reviews_Beauty_5\.json\.gz: the gzip stream ends early after line \d+: "
                                        r"the file is truncated"):
        prepare(ws, CFG)


def test_gzip_with_a_bad_crc_is_a_data_error_naming_the_file(ws):
    write_2014(ws.raw)
    path = ws.raw / "meta_Beauty.json.gz"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"meta_Beauty\.json\.gz: corrupt gzip data after line 4 \(CRC check failed"):
        prepare(ws, CFG)


def test_raw_files_from_another_directory_are_linked_into_the_workspace(ws, tmp_path):
    mine = tmp_path / "downloads"
    write_2018(mine)
    _rename(mine, "Beauty_5.json", "Pet_Supplies.json")
    _rename(mine, "meta_Beauty.json.gz", "meta_Pet_Supplies.json.gz")
    (mine / "notes.txt").write_text("not data")
    files = adopt_raw(ws, mine)
    assert (files.reviews.name, files.meta.name, files.edition) == ("Pet_Supplies.json", "meta_Pet_Supplies.json.gz", "2018")
    assert sorted(p.name for p in ws.raw.iterdir()) == ["Pet_Supplies.json", "meta_Pet_Supplies.json.gz"]
    assert (ws.raw / "Pet_Supplies.json").resolve() == (mine / "Pet_Supplies.json").resolve()
    prepare(ws, CFG)
    check_toy(ws)
    # another --raw replaces the links; a real file in raw/ is never overwritten
    other = tmp_path / "other"
    write_2014(other)
    adopt_raw(ws, other)
    assert sorted(p.name for p in ws.raw.iterdir()) == ["meta_Beauty.json.gz", "reviews_Beauty_5.json.gz"]
    (ws.raw / "reviews_Beauty_5.json.gz").unlink()
    write_2014(ws.raw)
    with pytest.raises(DataError, match="already in the workspace"):
        adopt_raw(ws, mine)
