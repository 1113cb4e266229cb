"""The trainer's own settings: the ``[trainer]`` section plus the per-experiment switches.

Kept as a plain dataclass so the core never imports the project's settings; :func:`trainer.data.train_config`
builds one from ``Settings.trainer``.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

MODELS = ("sasrec", "gru4rec", "bert4rec")
RERANK_MODES = ("sas", "tw", "hybrid")


@dataclass(frozen=True)
class TrainConfig:
    # [trainer] section (thesis defaults)
    max_len: int = 50
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.0
    epochs: int = 30
    hidden: int = 64
    layers: int = 2
    heads: int = 1
    dropout: float = 0.2
    negatives: int = 100
    lambda_sim: float = 0.5
    lambda_pair: float = 0.5
    rerank_mode: str = "hybrid"
    hybrid_alpha: float = 0.5
    ks: tuple[int, ...] = (5, 10, 20)
    seed: int = 0
    # experiment switches (thesis Table 5.1) and trainer-only knobs
    model: str = "sasrec"
    use_sim: bool = False
    use_pair: bool = False
    patience: int = 3          # epochs without a better validation score before stopping; 0 = never stop
    min_epochs: int = 10       # no early stop before this many epochs (a slow start is not a plateau)
    val_k: int = 10            # early stopping watches validation NDCG@val_k
    mask_prob: float = 0.2     # BERT4Rec cloze masking rate
    sim_cold_negatives: int = 0  # L_sim: in-batch cold negatives per edge (0 = the thesis' warm negatives only)

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.rerank_mode not in RERANK_MODES:
            raise ValueError(f"rerank_mode must be one of {RERANK_MODES}, got {self.rerank_mode!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], **overrides: Any) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown trainer settings {unknown}")
        return cls(**{**dict(values), **overrides})

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ks"] = list(self.ks)
        return d

    def digest(self, *extra: Any) -> str:
        """Hash of every field (and ``extra``): a checkpoint or result is reused only under the same hash."""
        payload = json.dumps([self.to_dict(), *extra], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
