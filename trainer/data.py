"""The adapter: the one trainer module that imports project code (workspace, retrieval, store, settings).

It turns a prepared, retrieval-built workspace into :class:`TrainingData` / :class:`EvalData`, and turns a
labeling run (the SQL store by run id, or the exported ``edges.tsv`` / ``triplets.tsv``) into filtered
:class:`Labels`. Every other trainer module depends only on numpy, torch and the trainer itself, so
moving the project's packages around means editing the imports here and nothing else.

Label filtering (thesis §4.3.5): a row is kept only when its user id maps to its user index, the user has
>= 2 training items, and every item id maps to its item index (an id that disagrees with its index counts
as unknown). The counts look like ``{"edges": {"read", "kept", "unknown_user", "short_history",
"unknown_item", "bad_weight", "kept_from_fallback"}, "triplets": {... plus "same_item"}}``.
"""
from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from coldlabel.config import load_settings as _load_settings
from coldlabel.data.workspace import Workspace
from coldlabel.errors import RunError
from coldlabel.store import Store
from retrieval import artefacts
from retrieval.index import (
    CandidateIndex,
    recall_at,
    recall_targets,
    seen_items,
    vector_retriever,
)
from trainer.config import TrainConfig
from trainer.dataset import (
    EvalData,
    Labels,
    Ragged,
    TrainingData,
    filter_labels,
    make_training_data,
)

if TYPE_CHECKING:
    from coldlabel.config import Settings

DEFAULT_NEG_CANDIDATES = 500  # Two-Tower candidates per user that feed the negative pool (not in [trainer])


def open_workspace(data_root: str | Path, dataset: str) -> Workspace:
    return Workspace.of(data_root, dataset)


def load_settings(config: str | Path | None = None, overrides: Iterable[str] = ()) -> Settings:
    """The project's settings (defaults -> file -> env -> ``section.key=value`` overrides)."""
    return _load_settings(config, list(overrides))


def train_config(settings: Settings, **overrides) -> TrainConfig:
    """``[trainer]`` settings plus experiment switches (``use_sim=True``, ``model="gru4rec"``, ...)."""
    return TrainConfig.from_mapping(settings.trainer.model_dump(), **overrides)


def _fingerprint(ws: Workspace, *extra) -> str:
    manifest = ws.processed / "manifest.json"
    h = hashlib.sha256(manifest.read_bytes() if manifest.exists() else b"")
    h.update(artefacts.read_stage_meta(ws, "index")["key"].encode())
    h.update(repr(extra).encode())
    return h.hexdigest()[:16]


def load_training_data(ws: Workspace, settings: Settings, neg_candidates: int = DEFAULT_NEG_CANDIDATES,
                       index: CandidateIndex | None = None) -> TrainingData:
    """Sequences, seen sets, strict cold items and each user's Two-Tower negative pool (training data only)."""
    index = index or CandidateIndex.load(ws, settings)
    n_users, n_items = len(ws.mappings["user2idx"]), len(ws.items)
    sequences = {u: seq for u, seq in ws.sequences.items() if seq}
    seen = seen_items(ws)
    users = np.array(sorted(sequences), dtype=np.int64)
    pool: dict[int, np.ndarray] = {}
    for start in range(0, len(users), 4096):
        chunk = users[start:start + 4096]
        ids, _ = index.search(chunk, neg_candidates)
        pool.update(zip(chunk.tolist(), ids))
    return make_training_data(n_users, n_items, sequences, seen, ws.cold_items, pool,
                              _fingerprint(ws, neg_candidates))


def load_eval_data(ws: Workspace, settings: Settings, m: int | None = None,
                   index: CandidateIndex | None = None) -> EvalData:
    """Test positives (weight > 0, not among the user's training items, users with a training history)
    and the Two-Tower search that evaluation re-ranks; ``m`` defaults to ``retrieval.candidates``."""
    index = index or CandidateIndex.load(ws, settings)
    target = recall_targets(ws)
    skipped = {"seen_in_train": target.skipped_seen, "user_without_history": target.skipped_no_history}
    positives = Ragged.from_rows(target.items, len(target.users))
    return EvalData(target.users, positives, index.search, int(m or settings.retrieval.candidates), skipped)


def retrieval_recall(ws: Workspace, m: int) -> dict[str, float | None]:
    """The retrieval module's own Two-Tower candidate recall@m (cold / warm / all), for consistency checks."""
    seen = seen_items(ws)
    users, items = artefacts.load_tower_vectors(ws)
    res = recall_at(vector_retriever(users, items), recall_targets(ws), seen, [m])
    return {split: res[split][0] for split in ("all", "cold", "warm")}


# ---- labels ---------------------------------------------------------------------------------------

def _resolve(ids: Iterable[str], idxs: Iterable[int], mapping: dict[str, int], size: int) -> np.ndarray:
    """Index per row, -1 when out of range or when a non-empty id maps elsewhere (or nowhere)."""
    out = []
    for key, idx in zip(ids, idxs):
        ok = 0 <= idx < size and (not key or mapping.get(key) == idx)
        out.append(idx if ok else -1)
    return np.asarray(out, dtype=np.int64)


def _labels(ws: Workspace, td: TrainingData, edges: dict[str, list], triplets: dict[str, list],
            source: str) -> Labels:
    users, items = ws.mappings["user2idx"], ws.mappings["item2idx"]
    e = {"user": _resolve(edges["user_id"], edges["user_idx"], users, td.n_users),
         "item": _resolve(edges["item_id"], edges["item_idx"], items, td.n_items),
         "weight": np.asarray(edges["weight"], dtype=np.float64),
         "from_fallback": np.asarray(edges["from_fallback"], dtype=bool)}
    t = {"user": _resolve(triplets["user_id"], triplets["user_idx"], users, td.n_users),
         "pos": _resolve(triplets["pos_id"], triplets["pos_idx"], items, td.n_items),
         "neg": _resolve(triplets["neg_id"], triplets["neg_idx"], items, td.n_items),
         "weight": np.asarray(triplets["weight"], dtype=np.float64),
         "from_fallback": np.asarray(triplets["from_fallback"], dtype=bool)}
    return filter_labels(td, e, t, source)


def labels_from_store(ws: Workspace, td: TrainingData, store_url: str, run_id: str) -> Labels:
    """A labeling run's edges and triplets read from the SQL store, filtered and counted."""
    edges: dict[str, list] = defaultdict(list)
    triplets: dict[str, list] = defaultdict(list)
    with Store(store_url) as store:
        run = store.get_run(run_id)  # a clear StoreError for an unknown run id
        if run.dataset != ws.name:
            raise RunError(f"run {run_id} labeled dataset {run.dataset!r}, not {ws.name!r}")
        for r in store.export_edges(run_id):
            for k, v in (("user_id", r.user_id), ("user_idx", r.user_idx), ("item_id", r.item_id),
                         ("item_idx", r.item_idx), ("weight", r.weight), ("from_fallback", r.from_fallback)):
                edges[k].append(v)
        for r in store.export_triplets(run_id):
            for k, v in (("user_id", r.user_id), ("user_idx", r.user_idx), ("pos_id", r.pos_id),
                         ("pos_idx", r.pos_idx), ("neg_id", r.neg_id), ("neg_idx", r.neg_idx),
                         ("weight", r.weight), ("from_fallback", r.from_fallback)):
                triplets[k].append(v)
    return _labels(ws, td, edges, triplets, f"store:{run_id}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true")


def _read_tsv(path: Path, columns: dict[str, tuple[str, type]]) -> dict[str, list]:
    """Columns by header name: {out_key: (tsv column, parser)}; a missing file reads as no rows."""
    out: dict[str, list] = {k: [] for k in columns}
    if not path.exists():
        return out
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {col for col, _ in columns.values()} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            for key, (col, parse) in columns.items():
                out[key].append(parse(row[col] or ""))
    return out


def labels_from_tsv(ws: Workspace, td: TrainingData, export_dir: str | Path) -> Labels:
    """Labels from ``edges.tsv`` / ``triplets.tsv`` as written by ``export_run``, filtered and counted."""
    export_dir = Path(export_dir)
    edges = _read_tsv(export_dir / "edges.tsv", {
        "user_id": ("user", str), "user_idx": ("user_idx", _int), "item_id": ("item", str),
        "item_idx": ("item_idx", _int), "weight": ("weight", _float), "from_fallback": ("from_fallback", _flag)})
    triplets = _read_tsv(export_dir / "triplets.tsv", {
        "user_id": ("user", str), "user_idx": ("user_idx", _int), "pos_id": ("pos_item", str),
        "pos_idx": ("pos_idx", _int), "neg_id": ("neg_item", str), "neg_idx": ("neg_idx", _int),
        "weight": ("weight", _float), "from_fallback": ("from_fallback", _flag)})
    return _labels(ws, td, edges, triplets, f"tsv:{export_dir}")
