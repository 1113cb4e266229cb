"""The RecBole export: files RecBole can parse, holding exactly the workspace's split (no RecBole needed).

Files are read the way RecBole 1.2.1 reads them: header ``name:type`` split on tabs, rows by a csv reader with
tab delimiter and ``"`` as quote character (pandas' dialect), ``token_seq`` fields split on spaces.
"""
from __future__ import annotations

import csv
import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from coldlabel.data import prepare, synth
from coldlabel.data.recbole import SEQUENTIAL_PARTS, export_recbole, id_token
from coldlabel.data.workspace import Workspace
from coldlabel.errors import WorkspaceError
from tests.support.cli import COLDLABEL
from tests.support.datasets import settings_for

ODD_TITLE = 'Rose\tWater "Toner"\nfor dry\r\nskin  8"'


def read_atomic(path: Path) -> list[dict[str, object]]:
    with open(path, encoding="utf-8", newline="") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        fields = [h.split(":") for h in header]
        rows = []
        for raw in csv.reader(fh, delimiter="\t", quotechar='"'):
            assert len(raw) == len(fields), (path.name, raw)
            row: dict[str, object] = {}
            for (name, kind), value in zip(fields, raw):
                row[name] = ([t for t in value.split(" ") if t] if kind == "token_seq"
                             else float(value) if kind == "float" else value)
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Workspace, Path]:
    """The `tiny` preset, prepared, with one item title full of tabs, newlines and quotes; exported."""
    root = tmp_path_factory.mktemp("recbole")
    settings = settings_for(root / "data")
    ws = Workspace.of(settings.data.root, "tiny")
    synth.generate("tiny", ws.root, seed=0)
    prepare.prepare(ws, settings.data)
    items_file = ws.processed / "items.jsonl"
    lines = items_file.read_text().splitlines()
    first = json.loads(lines[0])
    first.update(title=ODD_TITLE, category_path=["Beauty", "Skin Care", "Face\tToners"])
    lines[0] = json.dumps(first)
    items_file.write_text("\n".join(lines) + "\n")
    ws = Workspace.of(settings.data.root, "tiny")
    export_recbole(ws, root / "out", max_len=5)
    return ws, root / "out" / "tiny"


def positives(ws: Workspace) -> dict[str, list]:
    out: dict[str, list] = {}
    for x in ws.train:
        if x.weight > 0:
            out.setdefault(x.user, []).append(x)
    return out


def test_every_file_parses_and_counts_match_the_workspace(exported):
    ws, out = exported
    pos = positives(ws)
    n_test = sum(len(v) for v in ws.test_positives.items.values())
    n_valid = sum(len(v) >= 2 for v in pos.values())
    expected = {
        "tiny.inter": len(ws.train) + len(ws.test),
        "tiny.train.inter": sum(len(v) for v in pos.values()) - n_valid,
        "tiny.valid.inter": n_valid,
        "tiny.test.inter": n_test,
        "tiny.seqtrain.inter": sum(max(len(v) - 2, 0) for v in pos.values()),
        "tiny.seqvalid.inter": n_valid,
        "tiny.seqtest.inter": n_test,
        "tiny.item": len(ws.items),
    }
    assert {name: len(read_atomic(out / name)) for name in expected} == expected
    assert n_test > 0 and n_valid > 0 and expected["tiny.seqtrain.inter"] > 0
    for name in ("general.yaml", "sequential.yaml"):
        text = (out / name).read_text()
        assert "dataset: tiny" in text and f"data_path: {out.parent.absolute()}" in text
    assert "benchmark_filename: [seqtrain, seqvalid, seqtest]" in (out / "sequential.yaml").read_text()


def test_the_split_is_the_workspace_split(exported):
    ws, out = exported
    pos = positives(ws)
    pair = lambda r: (r["user_id"], r["item_id"])  # noqa: E731
    train, valid, test = (read_atomic(out / f"tiny.{p}.inter") for p in ("train", "valid", "test"))
    # train + valid = the training positives; valid = each >= 2-history user's last one
    assert Counter(map(pair, train + valid)) == Counter((x.user, x.item) for xs in pos.values() for x in xs)
    assert sorted(map(pair, valid)) == sorted((u, xs[-1].item) for u, xs in pos.items() if len(xs) >= 2)
    # test = the workspace's test positives, each once
    users, items = ws.user_ids, [it.asin for it in ws.items]
    want = sorted((users[u], items[i]) for u, its in ws.test_positives.items.items() for i in its)
    assert sorted(map(pair, test)) == want
    assert max(r["timestamp"] for r in train + valid) <= min(r["timestamp"] for r in test)  # global time split
    cold = {items[i] for i in ws.cold_items}
    assert cold and not cold & {r["item_id"] for r in train + valid}
    assert cold & {r["item_id"] for r in test}
    # whole-file export keeps every row, weight-0 ratings included
    assert Counter(map(pair, read_atomic(out / "tiny.inter"))) == Counter((x.user, x.item) for x in ws.train + ws.test)


def test_sequential_rows_are_the_trainer_sequences(exported):
    ws, out = exported
    pos = {u: [x.item for x in xs] for u, xs in positives(ws).items()}
    seqtrain, seqvalid, seqtest = (read_atomic(out / f"tiny.{p}.inter") for p in SEQUENTIAL_PARTS)
    rebuilt: dict[str, list[str]] = {}
    for r in seqtrain:  # a user's rows in order: the history is the fitting prefix before the target
        items = rebuilt.setdefault(r["user_id"], list(r["item_id_list"]))
        assert r["item_id_list"] == items[-5:]  # max_len 5: the most recent five
        items.append(r["item_id"])
    assert rebuilt == {u: s[:-1] for u, s in pos.items() if len(s) >= 3}
    assert {r["user_id"]: (r["item_id_list"], r["item_id"]) for r in seqvalid} == {
        u: (s[:-1][-5:], s[-1]) for u, s in pos.items() if len(s) >= 2}
    for r in seqtest:
        assert r["item_id_list"] == pos[r["user_id"]][-5:]
    assert max(len(r["item_id_list"]) for r in seqtest) == 5


def test_text_is_escaped_into_one_row(exported):
    ws, out = exported
    rows = read_atomic(out / "tiny.item")
    assert [r["item_id"] for r in rows] == [it.asin for it in ws.items]
    assert rows[0]["title"] == ['Rose', 'Water', '"Toner"', 'for', 'dry', 'skin', '8"']
    assert rows[0]["categories"] == ["Beauty", "Skin_Care", "Face_Toners"]
    raw = (out / "tiny.item").read_text(encoding="utf-8").split("\n")
    assert len(raw) == len(ws.items) + 2 and raw[-1] == ""  # header, one line per item, final newline


def test_ids_that_recbole_cannot_read_are_refused():
    assert id_token("B00ABC") == "B00ABC"
    for bad in ("", "A B", "A\tB", "A\nB"):
        with pytest.raises(WorkspaceError):
            id_token(bad)


def test_cli_export(exported, tmp_path):
    ws, _ = exported
    done = subprocess.run([*COLDLABEL, "--set", f"data.root={ws.root.parent}", "data", "export-recbole",
                           "-d", "tiny", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "tiny.seqtest.inter" in done.stdout
    assert len(read_atomic(tmp_path / "tiny" / "tiny.seqvalid.inter")) == sum(
        len(v) >= 2 for v in positives(ws).values())
