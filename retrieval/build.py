"""``coldlabel retrieval build``: content vectors → Two-Tower → FAISS index → leaves, cached per stage.

Each stage writes its files into ``<workspace>/retrieval/<stage>/`` and a ``meta.json`` last, holding a key
(hash of the stage's inputs and of the settings it depends on), the shape of every array, and stage facts.
A re-run recomputes a stage only when its key changed, so editing ``tt_epochs`` retrains the Two-Tower and
rebuilds what depends on it, while the MiniLM vectors are kept. Loaders check files against their meta and
raise :class:`ArtefactError` naming the file and the command that rebuilds it.

Nothing here reads the test split: the build sees the catalog, the training split and its own outputs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.workspace import Workspace, WorkspaceError, file_hash

log = logging.getLogger(__name__)

BUILD_VERSION = "1"  # bump when an artefact's format or meaning changes: forces a rebuild
STAGES = ("content", "two_tower", "index", "leaves")
STAGE_CONFIG = {  # the retrieval settings each stage depends on (others do not invalidate it)
    "content": ("encoder_model", "encoder_max_length", "user_history"),
    "two_tower": ("tt_dim", "tt_epochs", "tt_lr", "tt_batch_size", "tt_temperature", "seed"),
    "index": (),
    "leaves": ("max_leaf_size", "kmeans_iters", "seed", "user_history", "interest_leaves"),
}
STAGE_INPUTS = {  # processed files each stage reads (never test.tsv)
    "content": ("items.jsonl", "sequences.json", "mappings.json"),
    "two_tower": ("train.tsv",),
    "index": (),
    "leaves": ("items.jsonl", "sequences.json"),
}
UPSTREAM = {"content": None, "two_tower": "content", "index": "two_tower", "leaves": "two_tower"}


class ArtefactError(WorkspaceError):
    """A retrieval artefact is missing, corrupted, stale or inconsistent with its meta.json."""


def _build_hint(ws: Workspace) -> str:
    return f"run `coldlabel retrieval build --dataset {ws.name}`"


# ---- keys ------------------------------------------------------------------------------------------------

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def stage_config(settings, stage: str) -> dict:
    r = settings.retrieval
    return {name: getattr(r, name) for name in STAGE_CONFIG[stage]}


def expected_keys(ws: Workspace, settings) -> dict[str, str]:
    """The key every stage would have if built now from the current inputs and settings."""
    hashes: dict[str, str] = {}
    keys: dict[str, str] = {}
    for stage in STAGES:
        inputs = {}
        for name in STAGE_INPUTS[stage]:
            if name not in hashes:
                hashes[name] = file_hash(ws._need(ws.processed / name))
            inputs[name] = hashes[name]
        up = UPSTREAM[stage]
        keys[stage] = _digest({"version": BUILD_VERSION, "stage": stage, "inputs": inputs,
                               "upstream": keys[up] if up else None, "config": stage_config(settings, stage)})
    return keys


# ---- reading artefacts -----------------------------------------------------------------------------------

def stage_dir(ws: Workspace, stage: str) -> Path:
    return ws.retrieval / stage


def read_meta(ws: Workspace, stage: str) -> dict:
    path = stage_dir(ws, stage) / "meta.json"
    if not path.exists():
        raise ArtefactError(f"{path} is missing (retrieval stage '{stage}' not built); {_build_hint(ws)}")
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or "key" not in meta or "files" not in meta:
            raise ValueError("required fields key/files are absent")
        return meta
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path} is corrupted ({exc}); delete it and {_build_hint(ws)}") from None


def check_current(ws: Workspace, settings, stage: str) -> None:
    """Raise unless ``stage`` and everything upstream of it match the current inputs and settings."""
    keys = expected_keys(ws, settings)
    chain = []
    s: str | None = stage
    while s:
        chain.append(s)
        s = UPSTREAM[s]
    for s in reversed(chain):
        meta = read_meta(ws, s)
        if meta["key"] != keys[s] or meta.get("upstream_stamp") != _upstream_stamp(ws, s):
            raise ArtefactError(f"{stage_dir(ws, s) / 'meta.json'} is stale: inputs, retrieval settings or an "
                                f"upstream stage changed since it was built; {_build_hint(ws)}")


def _check_hash(ws: Workspace, path: Path, spec: dict) -> None:
    if spec.get("sha256") and file_hash(path) != spec["sha256"]:
        raise ArtefactError(f"{path} does not match its meta.json (changed, truncated or partly written); "
                            f"{_build_hint(ws)}")


def load_array(ws: Workspace, stage: str, name: str) -> np.ndarray:
    """One ``.npy`` artefact, checked against the shape and dtype its meta.json recorded."""
    meta = read_meta(ws, stage)
    path = stage_dir(ws, stage) / name
    spec = meta["files"].get(name)
    if spec is None:
        raise ArtefactError(f"{path}: not listed in {stage_dir(ws, stage) / 'meta.json'}; {_build_hint(ws)}")
    if not path.exists():
        raise ArtefactError(f"{path} is missing; {_build_hint(ws)}")
    _check_hash(ws, path, spec)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # truncated or garbage .npy files
        raise ArtefactError(f"{path} is corrupted ({type(exc).__name__}: {exc}); {_build_hint(ws)}") from None
    if list(arr.shape) != list(spec["shape"]) or str(arr.dtype) != spec["dtype"]:
        raise ArtefactError(f"{path} has shape {list(arr.shape)} {arr.dtype}, but its meta.json says "
                            f"{spec['shape']} {spec['dtype']}; {_build_hint(ws)}")
    if not np.isfinite(arr).all():
        raise ArtefactError(f"{path} contains NaN/inf values; {_build_hint(ws)}")
    return arr


def load_json(ws: Workspace, stage: str, name: str):
    meta = read_meta(ws, stage)
    path = stage_dir(ws, stage) / name
    if not path.exists():
        raise ArtefactError(f"{path} is missing; {_build_hint(ws)}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path} is corrupted ({exc}); {_build_hint(ws)}") from None
    _check_hash(ws, path, meta["files"].get(name, {}))
    return data


def load_tower_vectors(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """(user_vectors, item_vectors) exported by the Two-Tower, L2-normalised, ``float32``."""
    return (load_array(ws, "two_tower", "user_vectors.npy"), load_array(ws, "two_tower", "item_vectors.npy"))


def load_faiss_index(ws: Workspace, item_vectors: np.ndarray):
    import faiss

    meta = read_meta(ws, "index")
    path = stage_dir(ws, "index") / "items.faiss"
    if not path.exists():
        raise ArtefactError(f"{path} is missing; {_build_hint(ws)}")
    _check_hash(ws, path, meta["files"].get("items.faiss", {}))
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports unreadable files as RuntimeError
        raise ArtefactError(f"{path} is corrupted ({exc}); {_build_hint(ws)}") from None
    if index.ntotal != len(item_vectors) or index.d != item_vectors.shape[1] or index.ntotal != meta.get("ntotal"):
        raise ArtefactError(f"{path} holds {index.ntotal}x{index.d} vectors but the Two-Tower exported "
                            f"{item_vectors.shape[0]}x{item_vectors.shape[1]}; {_build_hint(ws)}")
    return index


# ---- writing artefacts -----------------------------------------------------------------------------------

def _upstream_stamp(ws: Workspace, stage: str) -> str | None:
    """Digest of the upstream stage's key and output file hashes: a rebuilt upstream whose bytes differ
    (another torch build, other thread count) invalidates this stage even though the keys are equal."""
    up = UPSTREAM[stage]
    if up is None:
        return None
    try:
        meta = read_meta(ws, up)
    except ArtefactError:
        return "missing"
    return _digest({"key": meta["key"], "files": meta["files"]})


def _is_fresh(ws: Workspace, stage: str, key: str) -> bool:
    """Meta matches the key, was built on the current upstream output, and every file has its recorded hash."""
    try:
        meta = read_meta(ws, stage)
    except ArtefactError:
        return False
    if meta["key"] != key or meta.get("upstream_stamp") != _upstream_stamp(ws, stage):
        return False
    for name, spec in meta["files"].items():
        path = stage_dir(ws, stage) / name
        if not path.exists() or path.stat().st_size != spec.get("bytes") or file_hash(path) != spec.get("sha256"):
            return False
    return True


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
    meta = {"stage": stage, "version": BUILD_VERSION, "key": key, "upstream_stamp": _upstream_stamp(ws, stage),
            "config": stage_config(settings, stage), "config_hash": _digest(stage_config(settings, stage))[:16],
            "files": files, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **facts}
    _save_json(stage_dir(ws, stage) / "meta.json", meta)
    return meta


# ---- stages ----------------------------------------------------------------------------------------------

@dataclass
class StageResult:
    stage: str
    rebuilt: bool
    seconds: float
    facts: dict = field(default_factory=dict)


Hook = Callable[[str, dict], None]  # (event, data) for progress display


def _noop(event: str, data: dict) -> None:
    pass


def build_content(ws: Workspace, settings, key: str, hook: Hook = _noop) -> dict:
    from retrieval.encoder import CACHE_FILE, encode_cached, user_content

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
    import torch

    from retrieval import two_tower

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
    import faiss

    from retrieval.index import flat_index

    _, item_vecs = load_tower_vectors(ws)
    index = flat_index(item_vecs)
    d = _begin(ws, "index")
    tmp = d / "items.faiss.tmp"
    faiss.write_index(index, str(tmp))
    os.replace(tmp, d / "items.faiss")
    files = {"items.faiss": _file_spec(d / "items.faiss")}
    return _finish(ws, "index", key, settings, files, kind="IndexFlatIP", ntotal=int(index.ntotal), dim=int(index.d))


def build_leaves_stage(ws: Workspace, settings, key: str, hook: Hook = _noop) -> dict:
    from retrieval.leaves import build_leaves, interest_leaves, item_leaf_ids

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


def build(ws: Workspace, settings, force: bool = False, hook: Hook = _noop) -> list[StageResult]:
    """Build (or reuse) every stage in order. ``force`` rebuilds all stages (the encoder cache still applies)."""
    keys = expected_keys(ws, settings)
    ws.retrieval.mkdir(parents=True, exist_ok=True)
    results = []
    for stage in STAGES:
        started = time.perf_counter()
        if not force and _is_fresh(ws, stage, keys[stage]):
            hook("stage_reused", {"stage": stage})
            results.append(StageResult(stage, False, 0.0, read_meta(ws, stage)))
            continue
        hook("stage_start", {"stage": stage})
        meta = BUILDERS[stage](ws, settings, keys[stage], hook)
        seconds = time.perf_counter() - started
        hook("stage_done", {"stage": stage, "seconds": seconds})
        log.info("%s: retrieval stage %s built in %.1fs", ws.name, stage, seconds)
        results.append(StageResult(stage, True, seconds, meta))
    return results
