"""Export of a prepared workspace to RecBole atomic files, on coldlabel's own split.

Why: RecBole users want our data, and a comparison with RecBole models is only fair when RecBole trains,
validates and tests on exactly the split the trainer uses. RecBole's own splitting (ratio or leave-one-out
per user) would leak future interactions across users; its ``benchmark_filename`` option instead reads a
ready split, one file per part. RecBole is never imported here: the files are plain text.

``<out>/<name>/`` holds (``<name>`` is the workspace name; RecBole's ``data_path`` is ``<out>``)::

    <name>.inter            every interaction, train and test, any rating:
                            user_id:token  item_id:token  rating:float  timestamp:float
    <name>.train.inter      the split for general models (benchmark_filename: [train, valid, test]),
    <name>.valid.inter      same four fields
    <name>.test.inter
    <name>.seqtrain.inter   the same split for sequential models (benchmark_filename: [seqtrain, seqvalid,
    <name>.seqvalid.inter   seqtest]): user_id:token  item_id_list:token_seq  item_id:token  timestamp:float.
    <name>.seqtest.inter    RecBole does not augment benchmark files, so each row is one (history, target)
    <name>.item             item_id:token  title:token_seq  brand:token  categories:token_seq
    general.yaml            RecBole settings that read the split above (data_path, fields, benchmark files)
    sequential.yaml

The mapping to the trainer (:mod:`trainer.dataset`, :attr:`Workspace.test_positives`):

* **train / seqtrain**: training positives (weight > 0) in time order, minus each valid user's last one. In
  seqtrain every position t >= 1 of a user's fitting sequence is a row: the previous (at most ``max_len``,
  the most recent) items, then item t. These are exactly the trainer's fitting targets.
* **valid / seqvalid**: the trainer's validation slice: the last training positive of every user with >= 2
  training positives (history: the positives before it).
* **test / seqtest**: :attr:`Workspace.test_positives` (weight > 0, user with a training history, not seen
  in training, each pair once). A seqtest row's history is the user's whole training sequence (last
  ``max_len``), as in the trainer's evaluation, and one row per test positive.
* Not in the split files: training rows of weight 0 (ratings below ``data.weak_rating``). They are in
  ``<name>.inter`` with their rating; the trainer treats them as seen (never a target or a negative), which
  RecBole cannot express. Cold items (in test, never in train) appear only in the test files, as in the
  trainer. Ids are the original reviewer ids and asins.

Escaping: fields are tab-separated and read by pandas (quote character ``"``). Tabs, carriage returns and
newlines become spaces; a field holding ``"`` is quoted csv-style; inside ``token_seq`` fields (items of
a history, words of a title, levels of a category path) each token's inner whitespace becomes ``_``,
since RecBole splits those fields on spaces. An id that escaping would change raises.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from coldlabel.data.workspace import Interaction, Workspace
from coldlabel.errors import WorkspaceError

INTER_FIELDS = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
SEQ_FIELDS = ("user_id:token", "item_id_list:token_seq", "item_id:token", "timestamp:float")
ITEM_FIELDS = ("item_id:token", "title:token_seq", "brand:token", "categories:token_seq")
GENERAL_PARTS = ("train", "valid", "test")
SEQUENTIAL_PARTS = ("seqtrain", "seqvalid", "seqtest")
_SPACE = re.compile(r"[\t\r\n]")
_RUN = re.compile(r"\s+")


def field_text(text: str) -> str:
    """A text field with tabs and line breaks made spaces (RecBole reads one row per line)."""
    return _SPACE.sub(" ", text).strip()


def seq_token(text: str) -> str:
    """One element of a ``token_seq`` field: RecBole splits those on spaces, so inner whitespace is ``_``."""
    return _RUN.sub("_", text.strip())


def id_token(key: str) -> str:
    """An id kept verbatim; one that escaping would change cannot be exported faithfully."""
    if not key or seq_token(field_text(key)) != key:
        raise WorkspaceError(f"id {key!r} is empty or holds whitespace; RecBole cannot read it as a token")
    return key


@dataclass(frozen=True)
class RecBoleExport:
    directory: Path
    rows: dict[str, int]           # file name -> data rows (header excluded)


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write("\t".join(header) + "\n")
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        for row in rows:
            writer.writerow(row)
            n += 1
    tmp.replace(path)
    return n


def _float(x: float) -> str:
    return f"{x:g}" if float(x) != int(x) else str(int(x))


def _positives_by_user(ws: Workspace) -> dict[int, list[Interaction]]:
    """Each user's training positives in time order, checked against ``sequences.json``."""
    out: dict[int, list[Interaction]] = {}
    for x in ws.train:
        if x.weight > 0:
            out.setdefault(x.user_idx, []).append(x)
    for u, seq in ws.sequences.items():
        if [x.item_idx for x in out.get(u, [])] != list(seq):
            raise WorkspaceError(f"{ws.processed}: sequences.json disagrees with train.tsv for user {u}; "
                                 "re-run `coldlabel data prepare --force`")
    return out


def _config(out_root: Path, name: str, parts: Sequence[str], load: Sequence[str], max_len: int) -> str:
    return "\n".join([
        "# RecBole settings for coldlabel's split (written by `coldlabel data export-recbole`)",
        f"data_path: {out_root.absolute()}",
        f"dataset: {name}",
        f"benchmark_filename: [{', '.join(parts)}]",
        "USER_ID_FIELD: user_id",
        "ITEM_ID_FIELD: item_id",
        "RATING_FIELD: rating",
        "TIME_FIELD: timestamp",
        f"load_col: {{inter: [{', '.join(load)}]}}",
        f"MAX_ITEM_LIST_LENGTH: {max_len}",
        "eval_args: {order: TO, mode: full}",
        "",
    ])


def export_recbole(ws: Workspace, out_root: str | Path, max_len: int = 50) -> RecBoleExport:
    """Write ``<out_root>/<name>/`` (see the module docstring) and return the row count of every file."""
    out_root = Path(out_root)
    name = ws.name
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    users = {idx: id_token(uid) for idx, uid in ws.user_ids.items()}
    items = [id_token(it.asin) for it in ws.items]
    positives = _positives_by_user(ws)
    rows: dict[str, int] = {}

    def inter(xs: Iterable[Interaction]) -> Iterable[tuple[str, str, str, str]]:
        return ((users[x.user_idx], items[x.item_idx], _float(x.rating), str(x.ts)) for x in xs)

    def history(xs: Sequence[Interaction]) -> str:
        return " ".join(items[x.item_idx] for x in xs[-max_len:])

    fit = {u: xs[:-1] if len(xs) >= 2 else xs for u, xs in positives.items()}
    valid = {u: xs[-1] for u, xs in positives.items() if len(xs) >= 2}
    train_rows = sorted((x for xs in fit.values() for x in xs), key=lambda x: (x.ts, x.user_idx))
    valid_rows = [valid[u] for u in sorted(valid)]
    test_rows: list[Interaction] = []
    first = {}
    for x in ws.test:
        first.setdefault((x.user_idx, x.item_idx), x)
    for u, its in ws.test_positives.items.items():
        test_rows.extend(first[(u, i)] for i in its)

    rows[f"{name}.inter"] = _write(out / f"{name}.inter", INTER_FIELDS, inter([*ws.train, *ws.test]))
    for part, xs in zip(GENERAL_PARTS, (train_rows, valid_rows, test_rows)):
        rows[f"{name}.{part}.inter"] = _write(out / f"{name}.{part}.inter", INTER_FIELDS, inter(xs))

    def seqtrain() -> Iterable[tuple[str, str, str, str]]:
        for u in sorted(fit):
            xs = fit[u]
            for t in range(1, len(xs)):
                yield users[u], history(xs[:t]), items[xs[t].item_idx], str(xs[t].ts)

    def seqvalid() -> Iterable[tuple[str, str, str, str]]:
        for u in sorted(valid):
            yield users[u], history(positives[u][:-1]), items[valid[u].item_idx], str(valid[u].ts)

    def seqtest() -> Iterable[tuple[str, str, str, str]]:
        for x in test_rows:
            yield users[x.user_idx], history(positives[x.user_idx]), items[x.item_idx], str(x.ts)

    for part, make in zip(SEQUENTIAL_PARTS, (seqtrain, seqvalid, seqtest)):
        rows[f"{name}.{part}.inter"] = _write(out / f"{name}.{part}.inter", SEQ_FIELDS, make())

    def item_rows() -> Iterable[tuple[str, str, str, str]]:
        for it in ws.items:
            words = " ".join(it.title.split())  # split() also takes tabs and newlines
            path = " ".join(seq_token(field_text(level)) for level in it.category_path if level.strip())
            yield items[it.idx], words, field_text(it.brand), path

    rows[f"{name}.item"] = _write(out / f"{name}.item", ITEM_FIELDS, item_rows())
    (out / "general.yaml").write_text(_config(out_root, name, GENERAL_PARTS,
                                              ("user_id", "item_id", "rating", "timestamp"), max_len))
    (out / "sequential.yaml").write_text(_config(out_root, name, SEQUENTIAL_PARTS,
                                                 ("user_id", "item_id_list", "item_id"), max_len))
    return RecBoleExport(out, rows)
