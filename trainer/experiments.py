"""Run settings x seeds on one label source, and save results so a report can be rebuilt without training.

Settings follow thesis Table 5.1, plus the baselines:

==========  ========  =====  =====  =================================================================
setting     model     sim    pair   views (catalog/rerank mode)
==========  ========  =====  =====  =================================================================
E0          SASRec    -      -      candidates/<rerank_mode>; candidates/sas and full/sas = ID-only SASRec
E1          SASRec    on     -      same (labels from the tree-constrained Stage 1-5 run)
E2          SASRec    -      on     same
E3          SASRec    on     on     same
TwoTower    -         -      -      candidates/tw (no training)
SASRec      SASRec    -      -      candidates/sas, full/sas (ID-only SASRec on its own, like the baselines)
GRU4Rec     GRU4Rec   -      -      candidates/sas, full/sas
BERT4Rec    BERT4Rec  -      -      candidates/sas, full/sas
==========  ========  =====  =====  =================================================================

Files written under ``out_dir``:

* ``runs/<setting>/seed<k>.json``: one finished (setting, seed). Its ``key`` hashes the config, data, labels
  (when used) and evaluation targets. A rerun skips a pair whose file already has the same key.
* ``runs/<setting>/seed<k>.users.npz``: the primary view's per-user metrics (``users`` and ``<split>/<metric>``
  arrays) and, for a label setting, ``labeled``: the users with labels. A report averages them over any group
  of users (the users a run labeled) without training again.
* ``checkpoints/<setting>/seed<k>-<key>/``: ``last.pt`` / ``best.pt``. A killed run resumes from here.
* ``results.json``: per setting, view, split and metric, ``{"mean", "std", "n"}``. ``std`` is the sample
  standard deviation over seeds (0 for one seed). A metric that is None for a seed (e.g. no cold users) is
  left out of that metric's n. Settings of earlier calls that this call does not name are kept (so E0 and the
  baselines can be run at different times into one directory); ``by_setting`` says which seeds, run files
  and config each setting's summary comes from.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.config import TrainConfig
from trainer.dataset import EvalData, Labels, TrainingData
from trainer.evaluate import evaluate, full_catalog_search
from trainer.train import Hook, log_hook, run_key, train

RESULT_VERSION = 2  # 2: per-user metrics of the primary view beside each run file


@dataclass(frozen=True)
class Setting:
    name: str
    model: str | None              # None: nothing to train (Two-Tower alone)
    use_sim: bool = False
    use_pair: bool = False
    views: tuple[str, ...] = ("candidates/config", "candidates/sas")  # "config" = cfg.rerank_mode

    @property
    def uses_labels(self) -> bool:
        return self.use_sim or self.use_pair


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("E0", "sasrec", views=("candidates/config", "candidates/sas", "full/sas")),
    Setting("E1", "sasrec", use_sim=True),
    Setting("E2", "sasrec", use_pair=True),
    Setting("E3", "sasrec", use_sim=True, use_pair=True),
    Setting("TwoTower", None, views=("candidates/tw",)),
    Setting("SASRec", "sasrec", views=("candidates/sas", "full/sas")),
    Setting("GRU4Rec", "gru4rec", views=("candidates/sas", "full/sas")),
    Setting("BERT4Rec", "bert4rec", views=("candidates/sas", "full/sas")),
)}


def primary_view(name: str, rerank_mode: str) -> str:
    """The view a setting is compared in: the first of its views (E0–E3: the configured rerank mode)."""
    catalog, mode = SETTINGS[name].views[0].split("/")
    return f"{catalog}/{rerank_mode if mode == 'config' else mode}"


def _eval_digest(ev: EvalData) -> str:
    return hashlib.sha256(ev.users.tobytes() + ev.positives.values.tobytes() + str(ev.m).encode()).hexdigest()[:16]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def user_metrics_path(out_dir: Path, setting: str, seed: int) -> Path:
    return Path(out_dir) / "runs" / setting / f"seed{seed}.users.npz"


def _save_users(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_user_metrics(out_dir: Path, setting: str, seed: int) -> dict[str, np.ndarray] | None:
    """What :func:`run_one` saved beside ``runs/<setting>/seed<k>.json`` (None for results of version 1)."""
    path = user_metrics_path(out_dir, setting, seed)
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def run_one(setting: Setting, seed: int, td: TrainingData, ev: EvalData, base: TrainConfig, labels: Labels,
            out_dir: Path, hook: Hook = log_hook) -> dict:
    """Train (or resume) and evaluate one (setting, seed); reuse its saved result when the key matches."""
    cfg = base.with_(seed=seed, model=setting.model or base.model, use_sim=setting.use_sim,
                     use_pair=setting.use_pair)
    used = labels if setting.uses_labels else None
    key = cfg.digest(setting.name, setting.views, setting.model, run_key(cfg, td, used), _eval_digest(ev),
                     RESULT_VERSION)
    path = out_dir / "runs" / setting.name / f"seed{seed}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            saved["cached"] = True
            return saved
    result: dict = {"setting": setting.name, "seed": seed, "key": key, "config": cfg.to_dict(), "warnings": [],
                    "labels": None if used is None else {"source": used.source, "edges": used.n_edges,
                                                         "triplets": used.n_triplets, "counts": used.counts}}
    if setting.use_sim and not labels.n_edges:
        result["warnings"].append("use_sim is on but there are no pseudo edges: L_sim is not computed")
    if setting.use_pair and not labels.n_triplets:
        result["warnings"].append("use_pair is on but there are no triplets: L_pair is not computed")
    model = None
    if setting.model is not None:
        trained = train(td, cfg, used, out_dir / "checkpoints" / setting.name / f"seed{seed}-{key}", hook)
        model = trained.model
        result["train"] = {"best_epoch": trained.best_epoch, "best_val_ndcg": trained.best_metric,
                           "stopped_early": trained.stopped_early,
                           "history": [vars(h) for h in trained.history]}
    result["evaluations"] = {}
    per_user: dict[str, np.ndarray] = {}
    for i, view in enumerate(setting.views):
        catalog, mode = view.split("/")
        mode = cfg.rerank_mode if mode == "config" else mode
        search, m = (full_catalog_search(td), td.n_items) if catalog == "full" else (None, None)
        res = evaluate(model, td, ev, mode=mode, alpha=cfg.hybrid_alpha, ks=cfg.ks, max_len=cfg.max_len,
                       search=search, m=m, keep_users=i == 0)
        per_user = res.pop("per_user", per_user)
        result["evaluations"][f"{catalog}/{mode}"] = res
    if used is not None:
        per_user["labeled"] = np.unique(np.concatenate([used.edge_users, used.trip_users])).astype(np.int64)
    _save_users(user_metrics_path(out_dir, setting.name, seed), per_user)
    _write_json(path, result)
    result["cached"] = False
    return result


def summarize(results: Sequence[dict]) -> dict:
    """``{setting: {view: {split: {metric: {"mean", "std", "n"}}}}}`` over the seeds of each setting."""
    values: dict = {}
    for res in results:
        for view, ev in res["evaluations"].items():
            for split, metrics in ev["metrics"].items():
                for name, value in metrics.items():
                    if value is not None:
                        (values.setdefault(res["setting"], {}).setdefault(view, {}).setdefault(split, {})
                         .setdefault(name, []).append(float(value)))
    out: dict = {}
    for setting, views in values.items():
        for view, splits in views.items():
            for split, metrics in splits.items():
                for name, vals in metrics.items():
                    arr = np.asarray(vals)
                    out.setdefault(setting, {}).setdefault(view, {}).setdefault(split, {})[name] = {
                        "mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
                        "n": len(arr)}
    return out


def run_experiments(td: TrainingData, ev: EvalData, base: TrainConfig, labels: Labels | None, out_dir: str | Path,
                    settings: Sequence[str] = ("E0", "E1", "E2", "E3"), seeds: Sequence[int] = (0, 1, 2),
                    hook: Hook = log_hook, on_run: Callable[[dict], None] | None = None,
                    before_run: Callable[[str, int], None] | None = None) -> dict:
    """Every (setting, seed), then ``results.json`` with mean ± std; returns what it wrote.
    ``before_run(setting, seed)`` and ``on_run(result)`` frame each pair (a progress display uses them)."""
    out_dir = Path(out_dir)
    labels = labels if labels is not None else Labels.empty()
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(SETTINGS)}")
    results = []
    for name in settings:
        for seed in seeds:
            if before_run is not None:
                before_run(name, int(seed))
            res = run_one(SETTINGS[name], int(seed), td, ev, base, labels, out_dir, hook)
            results.append(res)
            if on_run is not None:
                on_run(res)
    path = out_dir / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    if previous.get("version") != RESULT_VERSION:
        previous = {}
    kept = [s for s in previous.get("settings", []) if s not in settings]
    runs = [f"runs/{r['setting']}/seed{r['seed']}.json" for r in results]
    by_setting = {s: previous["by_setting"][s] for s in kept if s in previous.get("by_setting", {})}
    for name in settings:
        by_setting[name] = {"seeds": [int(s) for s in seeds], "config": base.to_dict(),
                            "runs": [r for r in runs if r.startswith(f"runs/{name}/")]}
    summary = {s: previous["summary"][s] for s in kept if s in previous.get("summary", {})}
    summary.update(summarize(results))
    report = {"version": RESULT_VERSION, "settings": [*kept, *settings], "seeds": [int(s) for s in seeds],
              "labels": {"source": labels.source, "edges": labels.n_edges, "triplets": labels.n_triplets,
                         "counts": labels.counts},
              "config": base.to_dict(), "summary": summary, "by_setting": by_setting,
              "runs": [r for s in kept for r in by_setting.get(s, {}).get("runs", [])] + runs}
    _write_json(path, report)
    return report
