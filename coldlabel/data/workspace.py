"""The dataset workspace: where each stage's files live and how later stages read them.

Layout of ``<data.root>/<dataset>/``::

    raw/          input review + metadata files (Amazon 2014 or 2018 format, .gz or plain)
    truth/        synthetic ground truth (latent tastes); evaluation and tests only, never the pipeline
    processed/    written by ``coldlabel data prepare``
        mappings.json     {"user2idx": {reviewerID: idx}, "item2idx": {asin: idx}} shared by every stage
        items.jsonl       one item per line: idx, asin, title, description, brand, category_path, text,
                          flagged (why its text reads like an instruction to a model, or "")
        train.tsv         split interactions: user, item, user_idx, item_idx, ts, rating, weight
        test.tsv          (weight: 1.0 strong, 0.3 weak, 0.0 not a positive)
        sequences.json    {user_idx: [item_idx, ...]} time-ordered training positives (weight > 0)
        taxonomy.json     stage-2 categories, stage-3 subcategories, item -> subcategory
        stats.json        the rows of thesis Table 3.1/3.2
        report.json       malformed lines (file, line number, reason), dropped counts, flagged items
        manifest.json     input content hash + settings hash; an unchanged manifest makes prepare a no-op
    retrieval/    written by ``coldlabel retrieval build`` (vectors, index, leaves, evidence, candidates)

Item text is ``title | level1 > level2 > ...`` (thesis §3.2). Subcategory ids are the category path cut at
the last subcategory level (``Beauty > Skin Care > Face > Moisturizers``) so that equal level-3/4 names under
different categories stay distinct; ``subcategory_name`` gives the short form shown in prompts.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from coldlabel.errors import WorkspaceError

PATH_SEP = " > "
T = TypeVar("T")
INTERACTION_COLUMNS = ("user", "item", "user_idx", "item_idx", "ts", "rating", "weight")


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    user_idx: int
    item_idx: int
    ts: int
    rating: float
    weight: float


@dataclass(frozen=True)
class Item:
    idx: int
    asin: str
    title: str
    description: str
    brand: str
    category_path: tuple[str, ...]
    flagged: str = ""  # why the item's text reads like an instruction to a model ("" = it does not)

    @property
    def category_text(self) -> str:
        return PATH_SEP.join(self.category_path)

    @property
    def text(self) -> str:
        """The compact ``title | category path`` form used for encoding, prompts and candidate display."""
        return f"{self.title} | {self.category_text}" if self.category_path else self.title


@dataclass(frozen=True)
class EvalTargets:
    """Test interactions that count as targets: weight > 0, the user has >= 1 training positive (a history
    to rank from), the item is not among the user's training rows (it could never be recommended), each
    (user, item) once, in test-file order. Retrieval recall, the trainer and the RecBole export all use it."""

    items: dict[int, list[int]]    # user_idx (ascending) -> test positives
    skipped_seen: int              # test positives already in the user's training rows
    skipped_no_history: int        # test positives of users without training positives


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes, streamed: how every stage tells whether its inputs changed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cold_items(train_items: Iterable[T], test_items: Iterable[T]) -> set[T]:
    """THE definition of a cold item in coldlabel: it appears in the test split and never in the training
    split, at any rating (a 1-star training review still gives an ID model something to learn from).
    Statistics, candidate listings, run reports and the trainer's cold/warm split all call this."""
    return set(test_items) - set(train_items)


def subcategory_name(subcategory_id: str, levels: tuple[int, int] = (3, 4)) -> str:
    parts = subcategory_id.split(PATH_SEP)
    tail = parts[levels[0] - 1: levels[1]]
    return PATH_SEP.join(tail) if tail else subcategory_id


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def of(cls, data_root: str | Path, dataset: str) -> "Workspace":
        return cls(Path(data_root) / dataset)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def truth_file(self) -> Path:
        """The synthetic generator's planted truth (``coldlabel/data/synth/writers.write_truth``)."""
        return self.truth / "truth.json.gz"

    @property
    def has_truth(self) -> bool:
        return self.truth_file.exists()

    def read_truth(self) -> dict:
        """The planted truth of a synthetic dataset: ``{"items": {asin: {"leaf": [...], ...}}, "users":
        {reviewerID: {"leaves": [[...], ...], ...}}, ...}``. Evaluation and the oracle labeler only; a real
        dataset has none (WorkspaceError)."""
        path = self.truth_file
        if not path.exists():
            raise WorkspaceError(f"dataset {self.name!r} has no planted truth ({path} is missing): only a "
                                 "synthetic dataset (`coldlabel data synth`) has one")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkspaceError(f"{path} is corrupted ({exc}); re-run `coldlabel data synth`") from None

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def retrieval(self) -> Path:
        return self.root / "retrieval"

    # ---- readers (each raises WorkspaceError with a hint when the file is missing/corrupt) -------
    def _need(self, path: Path, made_by: str = "coldlabel data prepare") -> Path:
        if not path.exists():
            raise WorkspaceError(f"{path} is missing; run `{made_by} --dataset {self.name}` first")
        return path

    def read_json(self, name: str, made_by: str = "coldlabel data prepare"):
        path = self._need(self.processed / name, made_by)
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkspaceError(f"{path} is corrupted ({exc}); delete it and re-run `{made_by}`") from None

    @cached_property
    def mappings(self) -> dict[str, dict[str, int]]:
        return self.read_json("mappings.json")

    @cached_property
    def user_ids(self) -> dict[int, str]:
        """user_idx -> reviewerID."""
        return {idx: uid for uid, idx in self.mappings["user2idx"].items()}

    @cached_property
    def items(self) -> list[Item]:
        """All items, indexed by ``item_idx`` (``items[i].idx == i``)."""
        path = self._need(self.processed / "items.jsonl")
        out: list[Item] = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                try:
                    d = json.loads(line)
                    out.append(Item(d["idx"], d["asin"], d["title"], d.get("description", ""),
                                    d.get("brand", ""), tuple(d["category_path"]), d.get("flagged") or ""))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise WorkspaceError(f"{path}:{n} is corrupted ({exc}); re-run `coldlabel data prepare`") from None
        if any(item.idx != i for i, item in enumerate(out)):
            raise WorkspaceError(f"{path} is not ordered by idx; re-run `coldlabel data prepare`")
        return out

    def interactions(self, split: str) -> Iterator[Interaction]:
        path = self._need(self.processed / f"{split}.tsv")
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if tuple(header or ()) != INTERACTION_COLUMNS:
                raise WorkspaceError(f"{path} has an unexpected header {header}; re-run `coldlabel data prepare`")
            for row in reader:
                yield Interaction(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), float(row[5]), float(row[6]))

    @cached_property
    def train(self) -> list[Interaction]:
        return list(self.interactions("train"))

    @cached_property
    def test(self) -> list[Interaction]:
        return list(self.interactions("test"))

    @cached_property
    def sequences(self) -> dict[int, list[int]]:
        return {int(u): seq for u, seq in self.read_json("sequences.json").items()}

    @cached_property
    def taxonomy(self) -> dict:
        return self.read_json("taxonomy.json")

    @cached_property
    def stats(self) -> dict:
        return self.read_json("stats.json")

    @cached_property
    def seen(self) -> dict[int, set[int]]:
        """Every item of each user's training rows, at any weight: a low-rated purchase is still 'seen', so it
        is never a candidate, a negative or a test target for that user."""
        out: dict[int, set[int]] = {}
        for x in self.train:
            out.setdefault(x.user_idx, set()).add(x.item_idx)
        return out

    @cached_property
    def test_positives(self) -> EvalTargets:
        """THE test targets every evaluation ranks against (see :class:`EvalTargets`)."""
        history = {u for u, seq in self.sequences.items() if seq}
        per_user: dict[int, list[int]] = {}
        skipped_seen = skipped_hist = 0
        for x in self.test:
            if x.weight <= 0:
                continue
            if x.user_idx not in history:
                skipped_hist += 1
            elif x.item_idx in self.seen.get(x.user_idx, ()):
                skipped_seen += 1
            elif x.item_idx not in per_user.setdefault(x.user_idx, []):
                per_user[x.user_idx].append(x.item_idx)
        return EvalTargets({u: per_user[u] for u in sorted(per_user)}, skipped_seen, skipped_hist)

    @cached_property
    def cold_items(self) -> set[int]:
        """Strict cold items, by :func:`cold_items` (the one definition every command uses)."""
        return cold_items((x.item_idx for x in self.train), (x.item_idx for x in self.test))
