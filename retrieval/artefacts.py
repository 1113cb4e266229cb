"""Reading the retrieval artefacts: where each stage's files live, the key that says whether they are current,
and loaders that check every file against its ``meta.json``.

Each stage (``content``, ``two_tower``, ``index``, ``leaves``) writes into ``<workspace>/retrieval/<stage>/``
and a ``meta.json`` last, holding a key (hash of the stage's inputs and of the settings it depends on), the
shape and hash of every file, and stage facts. Loaders raise :class:`ArtefactError` naming the file and the
command that rebuilds it. Building is ``retrieval/build.py``; this module never writes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import faiss
import numpy as np

from coldlabel.config import Settings
from coldlabel.data.workspace import Workspace, file_hash
from coldlabel.errors import ArtefactError

BUILD_VERSION = "1"  # bump when an artefact's format or meaning changes: forces a rebuild
BUILD_STAGES = ("content", "two_tower", "index", "leaves")
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


def build_hint(ws: Workspace) -> str:
    return f"run `coldlabel retrieval build --dataset {ws.name}`"


# ---- keys ------------------------------------------------------------------------------------------------

def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def stage_config(settings: Settings, stage: str) -> dict:
    r = settings.retrieval
    return {name: getattr(r, name) for name in STAGE_CONFIG[stage]}


def expected_keys(ws: Workspace, settings: Settings) -> dict[str, str]:
    """The key every stage would have if built now from the current inputs and settings."""
    hashes: dict[str, str] = {}
    keys: dict[str, str] = {}
    for stage in BUILD_STAGES:
        inputs = {}
        for name in STAGE_INPUTS[stage]:
            if name not in hashes:
                hashes[name] = file_hash(ws._need(ws.processed / name))
            inputs[name] = hashes[name]
        up = UPSTREAM[stage]
        keys[stage] = digest({"version": BUILD_VERSION, "stage": stage, "inputs": inputs,
                               "upstream": keys[up] if up else None, "config": stage_config(settings, stage)})
    return keys


# ---- reading artefacts -----------------------------------------------------------------------------------

def stage_dir(ws: Workspace, stage: str) -> Path:
    return ws.retrieval / stage


def read_stage_meta(ws: Workspace, stage: str) -> dict:
    path = stage_dir(ws, stage) / "meta.json"
    if not path.exists():
        raise ArtefactError(f"{path} is missing (retrieval stage '{stage}' not built); {build_hint(ws)}")
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta, dict) or "key" not in meta or "files" not in meta:
            raise ValueError("required fields key/files are absent")
        return meta
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path} is corrupted ({exc}); delete it and {build_hint(ws)}") from None


def check_current(ws: Workspace, settings: Settings, *stages: str) -> None:
    """Raise unless each of ``stages`` and everything upstream of them match the current inputs and settings.
    Input files are hashed once per call, however many stages are checked."""
    keys = expected_keys(ws, settings)
    chain: list[str] = []
    for stage in stages:
        s: str | None = stage
        while s:
            if s not in chain:
                chain.append(s)
            s = UPSTREAM[s]
    for s in sorted(chain, key=BUILD_STAGES.index):
        meta = read_stage_meta(ws, s)
        if meta["key"] != keys[s] or meta.get("upstream_stamp") != upstream_stamp(ws, s):
            raise ArtefactError(f"{stage_dir(ws, s) / 'meta.json'} is stale: inputs, retrieval settings or an "
                                f"upstream stage changed since it was built; {build_hint(ws)}")


def _check_hash(ws: Workspace, path: Path, spec: dict) -> None:
    if spec.get("sha256") and file_hash(path) != spec["sha256"]:
        raise ArtefactError(f"{path} does not match its meta.json (changed, truncated or partly written); "
                            f"{build_hint(ws)}")


def load_array(ws: Workspace, stage: str, name: str) -> np.ndarray:
    """One ``.npy`` artefact, checked against the shape and dtype its meta.json recorded."""
    meta = read_stage_meta(ws, stage)
    path = stage_dir(ws, stage) / name
    spec = meta["files"].get(name)
    if spec is None:
        raise ArtefactError(f"{path}: not listed in {stage_dir(ws, stage) / 'meta.json'}; {build_hint(ws)}")
    if not path.exists():
        raise ArtefactError(f"{path} is missing; {build_hint(ws)}")
    _check_hash(ws, path, spec)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # truncated or garbage .npy files
        raise ArtefactError(f"{path} is corrupted ({type(exc).__name__}: {exc}); {build_hint(ws)}") from None
    if list(arr.shape) != list(spec["shape"]) or str(arr.dtype) != spec["dtype"]:
        raise ArtefactError(f"{path} has shape {list(arr.shape)} {arr.dtype}, but its meta.json says "
                            f"{spec['shape']} {spec['dtype']}; {build_hint(ws)}")
    if not np.isfinite(arr).all():
        raise ArtefactError(f"{path} contains NaN/inf values; {build_hint(ws)}")
    return arr


def load_json(ws: Workspace, stage: str, name: str):
    meta = read_stage_meta(ws, stage)
    path = stage_dir(ws, stage) / name
    if not path.exists():
        raise ArtefactError(f"{path} is missing; {build_hint(ws)}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path} is corrupted ({exc}); {build_hint(ws)}") from None
    _check_hash(ws, path, meta["files"].get(name, {}))
    return data


def load_tower_vectors(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """(user_vectors, item_vectors) exported by the Two-Tower, L2-normalised, ``float32``."""
    return (load_array(ws, "two_tower", "user_vectors.npy"), load_array(ws, "two_tower", "item_vectors.npy"))


def load_faiss_index(ws: Workspace, item_vectors: np.ndarray) -> faiss.Index:
    meta = read_stage_meta(ws, "index")
    path = stage_dir(ws, "index") / "items.faiss"
    if not path.exists():
        raise ArtefactError(f"{path} is missing; {build_hint(ws)}")
    _check_hash(ws, path, meta["files"].get("items.faiss", {}))
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports unreadable files as RuntimeError
        raise ArtefactError(f"{path} is corrupted ({exc}); {build_hint(ws)}") from None
    if index.ntotal != len(item_vectors) or index.d != item_vectors.shape[1] or index.ntotal != meta.get("ntotal"):
        raise ArtefactError(f"{path} holds {index.ntotal}x{index.d} vectors but the Two-Tower exported "
                            f"{item_vectors.shape[0]}x{item_vectors.shape[1]}; {build_hint(ws)}")
    return index


def upstream_stamp(ws: Workspace, stage: str) -> str | None:
    """Digest of the upstream stage's key and output file hashes: a rebuilt upstream whose bytes differ
    (another torch build, other thread count) invalidates this stage even though the keys are equal."""
    up = UPSTREAM[stage]
    if up is None:
        return None
    try:
        meta = read_stage_meta(ws, up)
    except ArtefactError:
        return "missing"
    return digest({"key": meta["key"], "files": meta["files"]})


def is_fresh(ws: Workspace, stage: str, key: str) -> bool:
    """Meta matches the key, was built on the current upstream output, and every file has its recorded hash."""
    try:
        meta = read_stage_meta(ws, stage)
    except ArtefactError:
        return False
    if meta["key"] != key or meta.get("upstream_stamp") != upstream_stamp(ws, stage):
        return False
    for name, spec in meta["files"].items():
        path = stage_dir(ws, stage) / name
        if not path.exists() or path.stat().st_size != spec.get("bytes") or file_hash(path) != spec.get("sha256"):
            return False
    return True
