"""The training loop: AdamW, seeded and deterministic on CPU, early stopping on the validation slice,
an atomic checkpoint after every epoch, and resume after a crash.

One step does the following:

* Windows of a batch of users go through the main loss.
* With ``use_sim`` / ``use_pair``: random labeled users with all their pseudo edges and triplets, at most
  ``batch_size`` of each (:class:`trainer.batches.LabelDraw`), go through ``L_sim`` and ``L_pair``.
* With ``sim_cold_negatives`` > 0, L_sim's negatives also hold cold items labeled for other users of the same
  mini-batch (:func:`trainer.batches.cold_in_batch_negatives`).
* The users of both label mini-batches are encoded once, in buckets of similar history length
  (:func:`label_hidden`).

``total = main + lambda_sim * sim + lambda_pair * pair`` is then taken in one AdamW step. Label histories are
the users' fitting sequences, so the validation item is never an input during training.

After each epoch the model is scored on the validation slice (NDCG@``val_k`` of each valid user's held-out
last training item, see :func:`trainer.evaluate.validation_ndcg`). The checkpoint ``last.pt`` (model,
optimizer, torch and numpy RNG states, epoch, best score, patience counter, history) is written atomically
via a temporary file and ``os.replace``; ``best.pt`` holds the best weights. The progress hook is called only
after both files are saved. A run killed at any point therefore resumes from the last finished epoch and
ends with the same weights as an uninterrupted run with the same seed. From epoch ``min_epochs`` on, training
stops after ``patience`` epochs without improvement, and the best weights are restored.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from trainer import losses
from trainer.baselines import BERT4Rec, GRU4Rec
from trainer.batches import (
    LabelDraw,
    NegativeSampler,
    cold_in_batch_negatives,
    fitting_users,
    history_buckets,
    trim,
    user_batches,
    windows,
)
from trainer.config import TrainConfig
from trainer.dataset import Labels, TrainingData
from trainer.evaluate import validation_ndcg
from trainer.model import SASRec, SeqModel

log = logging.getLogger(__name__)
Hook = Callable[[str, dict], None]  # (event, data): "start", "step", "epoch", "end"
CHECKPOINT_VERSION = 1


class CheckpointMismatch(RuntimeError):
    """A checkpoint exists for a different configuration, data or label set."""


@dataclass
class EpochReport:
    epoch: int                 # 1-based
    main: float
    sim: float | None          # None: the term is off (switch, lambda 0 or no labels)
    pair: float | None
    total: float
    val_ndcg: float
    seconds: float
    improved: bool


@dataclass
class TrainResult:
    model: SeqModel
    history: list[EpochReport]
    best_epoch: int
    best_metric: float
    stopped_early: bool
    resumed_from: int | None   # epochs already done when this call started (None: fresh start)


def log_hook(event: str, data: dict) -> None:
    """The default progress hook: one log line per epoch (the CLI draws a progress bar instead)."""
    if event == "epoch":
        terms = " ".join(f"{k}={data[k]:.4f}" for k in ("main", "sim", "pair") if data.get(k) is not None)
        log.info("epoch %d %s val_ndcg=%.4f%s (%.1fs)", data["epoch"], terms, data["val_ndcg"],
                 " *" if data["improved"] else "", data["seconds"])


def build_model(cfg: TrainConfig, n_items: int) -> SeqModel:
    if cfg.model == "sasrec":
        return SASRec(n_items, cfg.max_len, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout)
    if cfg.model == "gru4rec":
        return GRU4Rec(n_items, cfg.hidden, cfg.layers, cfg.dropout)
    if cfg.model == "bert4rec":
        return BERT4Rec(n_items, cfg.max_len, cfg.hidden, cfg.layers, cfg.heads, cfg.dropout, cfg.mask_prob)
    raise ValueError(f"unknown model {cfg.model!r}")


def run_key(cfg: TrainConfig, td: TrainingData, labels: Labels | None) -> str:
    """What a checkpoint belongs to: config, data, and the labels when a label loss is switched on."""
    uses_labels = labels is not None and (cfg.use_sim or cfg.use_pair)
    return cfg.digest(td.fingerprint or td.sequences.digest(), td.n_items, td.neg_pool.digest(),
                      labels.digest() if uses_labels else None, CHECKPOINT_VERSION)


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _as_tensors(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(a) for a in arrays]


def label_hidden(model: SeqModel, td: TrainingData, rows: np.ndarray, max_len: int) -> torch.Tensor:
    """``[len(rows), d]``: each label row's user representation from their fitting history, one forward pass
    per length bucket and per distinct user (see :func:`trainer.batches.history_buckets`)."""
    buckets, where = history_buckets(td.fit, rows, max_len)
    h = torch.cat([model.last_hidden(torch.as_tensor(tokens)) for tokens in buckets])
    return h[torch.as_tensor(where)]


def train(td: TrainingData, cfg: TrainConfig, labels: Labels | None = None, ckpt_dir: str | Path | None = None,
          hook: Hook = log_hook, resume: bool = True) -> TrainResult:
    """Train ``cfg.model`` on ``td`` (plus ``labels`` for the switched-on label losses) and return the best
    validation weights. With ``ckpt_dir``, checkpoint every epoch and (``resume``) continue from
    ``last.pt`` there; a checkpoint of another config/data/labels raises :class:`CheckpointMismatch`.
    ``hook(event, data)`` gets "start", "step" (epoch, step, steps), "epoch" (an :class:`EpochReport` as a
    dict: main / sim / pair / total loss, val_ndcg, seconds, improved) and "end"."""
    labels = labels if labels is not None else Labels.empty()
    key = run_key(cfg, td, labels)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_model(cfg, td.n_items)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    objective = losses.Objective(cfg.use_sim, cfg.use_pair, cfg.lambda_sim, cfg.lambda_pair)
    sampler = NegativeSampler(td)
    users = fitting_users(td)
    steps = -(-len(users) // cfg.batch_size)
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    state = {"epoch": 0, "best_metric": -np.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "done": False}
    best_state = None
    resumed_from = None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if resume and (ckpt / "last.pt").exists():
            saved = torch.load(ckpt / "last.pt", weights_only=False)
            if saved.get("key") != key:
                raise CheckpointMismatch(f"{ckpt / 'last.pt'} belongs to another run (key {saved.get('key')} != "
                                         f"{key}); use another directory or delete it")
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optim"])
            torch.set_rng_state(saved["torch_rng"])
            rng.bit_generator.state = saved["np_rng"]
            state = {k: saved[k] for k in state}
            resumed_from = state["epoch"]
    hook("start", {"epochs": cfg.epochs, "steps": steps, "resumed_from": resumed_from, "users": len(users),
                   "edges": labels.n_edges, "triplets": labels.n_triplets})
    sim_on, pair_on = objective.wants_sim(labels.n_edges), objective.wants_pair(labels.n_triplets)
    edge_w = torch.as_tensor(labels.edge_weights, dtype=torch.float32)
    none = np.empty(0, dtype=np.int64)
    draw = LabelDraw(labels.edge_users if sim_on else none, labels.trip_users if pair_on else none)
    edge_keys = np.sort(labels.edge_users.astype(np.int64) * td.n_items + labels.edge_items)
    trip_w = torch.as_tensor(labels.trip_weights, dtype=torch.float32)
    while not state["done"] and state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        model.train()
        sums = {"main": 0.0, "sim": 0.0, "pair": 0.0, "total": 0.0}
        for step, batch in enumerate(user_batches(users, cfg.batch_size, rng, td.fit.lengths), 1):
            window = torch.as_tensor(trim(windows(td.fit, batch, cfg.max_len + 1), keep=2))
            inputs, targets = model.train_inputs(window, rng)
            negatives = torch.as_tensor(sampler.sample(batch, cfg.negatives, rng))
            main = losses.main_loss(model, model.encode(inputs), targets, negatives)
            sim = pair = None
            if sim_on or pair_on:
                e_idx, t_idx = draw.draw(cfg.batch_size, rng)
                rows = np.concatenate([labels.edge_users[e_idx], labels.trip_users[t_idx]])
                h = label_hidden(model, td, rows, cfg.max_len)
                if sim_on:
                    u, items = labels.edge_users[e_idx], labels.edge_items[e_idx]
                    neg = sampler.sample(u, cfg.negatives, rng, exclude=items)
                    if cfg.sim_cold_negatives:
                        neg = np.concatenate([neg, cold_in_batch_negatives(
                            u, items, cfg.sim_cold_negatives, rng, td.cold, edge_keys, td.n_items)], axis=1)
                    neg, pos = _as_tensors(neg, items)
                    sim = losses.sim_loss(model, h[:len(e_idx)], pos, neg, edge_w[e_idx])
                if pair_on:
                    pos, neg = _as_tensors(labels.trip_pos[t_idx], labels.trip_neg[t_idx])
                    pair = losses.pair_loss(model, h[len(e_idx):], pos, neg, trip_w[t_idx])
            total = objective.total(main, sim, pair)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            for name, value in (("main", main), ("sim", sim), ("pair", pair), ("total", total)):
                if value is not None:
                    sums[name] += float(value.detach())
            hook("step", {"epoch": epoch, "step": step, "steps": steps})
        n = max(steps, 1)
        val = validation_ndcg(model, td, cfg.val_k, cfg.max_len)
        improved = val > state["best_metric"]
        if improved:
            state.update(best_metric=val, best_epoch=epoch, bad_epochs=0)
            best_state = copy.deepcopy(model.state_dict())
            if ckpt is not None:
                save_atomic({"key": key, "epoch": epoch, "model": best_state}, ckpt / "best.pt")
        else:
            state["bad_epochs"] += 1
        report = EpochReport(epoch, sums["main"] / n, sums["sim"] / n if sim_on else None,
                             sums["pair"] / n if pair_on else None, sums["total"] / n, val,
                             round(time.perf_counter() - started, 3), improved)
        state["history"].append(asdict(report))
        state["epoch"] = epoch
        stop = cfg.patience > 0 and state["bad_epochs"] >= cfg.patience and epoch >= cfg.min_epochs
        state["done"] = stop or epoch >= cfg.epochs
        if ckpt is not None:
            save_atomic({"key": key, "version": CHECKPOINT_VERSION, "model": model.state_dict(),
                         "optim": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                         "np_rng": rng.bit_generator.state, **state}, ckpt / "last.pt")
        hook("epoch", asdict(report))
    if best_state is None and ckpt is not None and (ckpt / "best.pt").exists():
        best_state = torch.load(ckpt / "best.pt", weights_only=False)["model"]
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history = [EpochReport(**h) for h in state["history"]]
    stopped = bool(history) and history[-1].epoch < cfg.epochs
    hook("end", {"best_epoch": state["best_epoch"], "best_metric": float(state["best_metric"]),
                 "stopped_early": stopped})
    return TrainResult(model, history, state["best_epoch"], float(state["best_metric"]), stopped, resumed_from)
