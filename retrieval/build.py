"""``coldlabel retrieval build``: content vectors → Two-Tower → FAISS index → leaves, cached per stage.

A re-run recomputes a stage only when its key changed (``retrieval/artefacts.py`` says how keys are made),
so editing ``tt_epochs`` retrains the Two-Tower and rebuilds what depends on it, while the MiniLM vectors are
kept. Every file is written to a temporary name and renamed; ``meta.json`` comes last and marks completion.

Nothing here reads the test split: the build sees the catalog, the training split and its own outputs.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import torch

from coldlabel.data.workspace import Workspace, file_hash
from retrieval import two_tower
from retrieval.artefacts import (
    BUILD_STAGES,
    BUILD_VERSION,
    digest,
    expected_keys,
    is_fresh,
    load_array,
    load_tower_vectors,
    read_stage_meta,
    stage_config,
    stage_dir,
    upstream_stamp,
)
from retrieval.encoder import CACHE_FILE, encode_cached, user_content
from retrieval.index import flat_index
from retrieval.leaves import build_leaves, interest_leaves, item_leaf_ids

log = logging.getLogger(__name__)


def _file_spec(path: Path) -> dict:
    return {"sha256": file_hash(path), "bytes": path.stat().st_size}


def _save_npy(path: Path, arr: np.ndarray) -> dict:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), **_file_spec(path)}


def _save_json(path: Path, data) -> dict:
    text = json.dumps(data, ensure_ascii=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return _file_spec(path)


def _begin(ws: Workspace, stage: str) -> Path:
    d = stage_dir(ws, stage)
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.json").unlink(missing_ok=True)  # an interrupted rebuild is never mistaken for a finished one
    return d


def _finish(ws: Workspace, stage: str, key: str, settings, files: dict, **facts) -> dict:
    meta = {"stage": stage, "version": BUILD_VERSION, "key": key, "upstream_stamp": upstream_stamp(ws, stage),
            "config": stage_config(settings, stage), "config_hash": digest(stage_config(settings, stage))[:16],
            "files": files, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts}
    _save_json(stage_dir(ws, stage) / "meta.json", meta)
    return meta


# ---- stages ----------------------------------------------------------------------------------------------

@dataclass
class BuiltStage:
    stage: str
    rebuilt: bool
    seconds: float
    facts: dict = field(default_factory=dict)


Hook = Callable[[str, dict], None]  # (event, data) for progress display


def _noop(event: str, data: dict) -> None:
    pass


def build_content(ws: Workspace, settings, key: str, hook: Hook = _noop) -> dict:
    r = settings.retrieval
    texts = [it.text for it in ws.items]
    hook("content_start", {"total": len(texts)})
    item_vecs, encoded = encode_cached(texts, ws.retrieval / CACHE_FILE, r.encoder_model, r.encoder_max_length,
                                       r.encoder_batch_size, on_batch=lambda n: hook("content_batch", {"n": n}))
    n_users = len(ws.mappings["user2idx"])
    user_vecs = user_content(item_vecs, ws.sequences, n_users, r.user_history)
    d = _begin(ws, "content")
    files = {"item_content.npy": _save_npy(d / "item_content.npy", item_vecs),
             "user_content.npy": _save_npy(d / "user_content.npy", user_vecs)}
    return _finish(ws, "content", key, settings, files, model=r.encoder_model, encoded_now=encoded,
                   n_items=len(texts), n_users=n_users, dim=int(item_vecs.shape[1]))


def training_positives(ws: Workspace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [(x.user_idx, x.item_idx, x.weight) for x in ws.train if x.weight > 0]
    arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2].astype(np.float32)


def build_two_tower(ws: Workspace, settings, key: str, hook: Hook = _noop) -> dict:
    r = settings.retrieval
    item_content = load_array(ws, "content", "item_content.npy")
    user_content = load_array(ws, "content", "user_content.npy")
    users, items, weights = training_positives(ws)
    hook("tt_start", {"total": r.tt_epochs, "rows": len(users)})
    result = two_tower.train(user_content, item_content, users, items, weights, dim=r.tt_dim, epochs=r.tt_epochs,
                             lr=r.tt_lr, batch_size=r.tt_batch_size, temperature=r.tt_temperature, seed=r.seed,
                             on_epoch=lambda e, loss: hook("tt_epoch", {"epoch": e, "loss": loss}))
    d = _begin(ws, "two_tower")
    files = {"user_vectors.npy": _save_npy(d / "user_vectors.npy", result.user_vectors),
             "item_vectors.npy": _save_npy(d / "item_vectors.npy", result.item_vectors)}
    tmp = d / "model.pt.tmp"
    torch.save(result.model.state_dict(), tmp)
    os.replace(tmp, d / "model.pt")
    files["model.pt"] = _file_spec(d / "model.pt")
    return _finish(ws, "two_tower", key, settings, files, n_users=len(result.user_vectors),
                   n_items=len(result.item_vectors), dim=r.tt_dim, split="train (weight > 0)",
                   train_rows=len(users), trained_users=result.trained_users,
                   trained_items=result.trained_items, epochs=r.tt_epochs, final_loss=result.losses[-1],
                   losses=[round(x, 5) for x in result.losses])


def build_index(ws: Workspace, settings, key: str, hook: Hook = _noop) -> dict:
    _, item_vecs = load_tower_vectors(ws)
    index = flat_index(item_vecs)
    d = _begin(ws, "index")
    tmp = d / "items.faiss.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, d / "items.faiss")
    files = {"items.faiss": _file_spec(d / "items.faiss")}
    return _finish(ws, "index", key, settings, files, kind="IndexFlatIP", ntotal=int(index.ntotal), dim=int(index.d))


def build_leaves_stage(ws: Workspace, settings, key: str, hook: Hook = _noop) -> dict:
    r = settings.retrieval
    _, item_vecs = load_tower_vectors(ws)
    leaves = build_leaves(ws.items, item_vecs, r.max_leaf_size, r.kmeans_iters, r.seed)
    item_leaf = item_leaf_ids(leaves, len(ws.items))
    users = {str(u): interest_leaves(seq, item_leaf, r.user_history, r.interest_leaves)
             for u, seq in sorted(ws.sequences.items()) if seq}
    d = _begin(ws, "leaves")
    files = {
        "leaves.json": _save_json(d / "leaves.json", {
            "leaves": [{"id": lf.id, "path": list(lf.path), "items": list(lf.items), "method": lf.method,
                        "description": lf.description} for lf in leaves],
            "item_leaf": item_leaf}),
        "user_leaves.json": _save_json(d / "user_leaves.json", users),
    }
    methods = {m: sum(1 for lf in leaves if lf.method == m) for m in ("whole", "kmeans", "hash")}
    return _finish(ws, "leaves", key, settings, files, n_leaves=len(leaves), methods=methods,
                   max_leaf=max((len(lf.items) for lf in leaves), default=0), n_users=len(users))


BUILDERS = {"content": build_content, "two_tower": build_two_tower, "index": build_index,
            "leaves": build_leaves_stage}


def build(ws: Workspace, settings, force: bool = False, hook: Hook = _noop) -> list[BuiltStage]:
    """Build (or reuse) every stage in order. ``force`` rebuilds all stages (the encoder cache still applies)."""
    keys = expected_keys(ws, settings)
    ws.retrieval.mkdir(parents=True, exist_ok=True)
    results = []
    for stage in BUILD_STAGES:
        started = time.perf_counter()
        if not force and is_fresh(ws, stage, keys[stage]):
            hook("stage_reused", {"stage": stage})
            results.append(BuiltStage(stage, False, 0.0, read_stage_meta(ws, stage)))
            continue
        hook("stage_start", {"stage": stage})
        meta = BUILDERS[stage](ws, settings, keys[stage], hook)
        seconds = time.perf_counter() - started
        hook("stage_done", {"stage": stage, "seconds": seconds})
        log.info("%s: retrieval stage %s built in %.1fs", ws.name, stage, seconds)
        results.append(BuiltStage(stage, True, seconds, meta))
    return results
