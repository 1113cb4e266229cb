"""Stored experiment results as table rows: what ``coldlabel train`` prints at the end and what
``coldlabel report`` renders, read from ``results.json`` and the per-seed run files, never recomputed.

One row per setting (and per labeling run for E1–E3), in the setting's primary view
(:func:`trainer.experiments.primary_view`): E0–E3 in the configured rerank mode over the Two-Tower
candidates, the Two-Tower alone by its own score, the ID-only models (SASRec, GRU4Rec, BERT4Rec) by their
own score over the same candidates. The cells are the ``{"mean", "std", "n"}`` of ``results.json`` as saved.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.evaluate import subset_metrics
from trainer.experiments import SETTINGS, load_user_metrics, primary_view

ORDER = ("E0", "E1", "E2", "E3", "TwoTower", "SASRec", "GRU4Rec", "BERT4Rec")
METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr")
HEADERS = ("Recall@5", "Recall@10", "Recall@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR")


@dataclass
class Row:
    """One setting from one results directory, in its primary view."""
    label: str                 # "E3", or "E3 · <run>" when several runs are shown
    setting: str
    source: str                # results directory name: "no-labels" or a run id
    view: str
    seeds: list[int]
    cells: dict                # split -> metric -> {"mean", "std", "n"}
    per_seed: dict[int, dict] = field(default_factory=dict)  # seed -> split -> metric -> value
    other_views: dict[str, dict] = field(default_factory=dict)  # view -> split -> metric -> cell
    config: dict = field(default_factory=dict)                   # the trainer config this setting ran with
    best_epochs: dict[int, int] = field(default_factory=dict)    # seed -> best validation epoch (trained only)

    def cell(self, split: str, metric: str) -> dict | None:
        return self.cells.get(split, {}).get(metric)


def read_results(out_dir: Path) -> dict | None:
    """``results.json`` of a results directory, or None when nothing was trained there yet."""
    path = Path(out_dir) / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def _setting_config(results: dict, name: str) -> dict:
    return results.get("by_setting", {}).get(name, {}).get("config") or results.get("config", {})


def rows_of(results: dict, out_dir: Path, source: str, label_suffix: str = "") -> list[Row]:
    """The rows of one results directory, in thesis order (E0–E3, then the baselines)."""
    rows = []
    for name in sorted(results.get("summary", {}), key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER)):
        if name not in SETTINGS:
            continue
        view = primary_view(name, _setting_config(results, name).get("rerank_mode", "hybrid"))
        info = results.get("by_setting", {}).get(name, {})
        runs = info.get("runs") or [r for r in results.get("runs", []) if r.startswith(f"runs/{name}/")]
        per_seed, best = {}, {}
        for rel in runs:
            path = Path(out_dir) / rel
            if path.exists():
                run = json.loads(path.read_text())
                per_seed[int(run["seed"])] = run["evaluations"].get(view, {}).get("metrics", {})
                if run.get("train"):
                    best[int(run["seed"])] = int(run["train"]["best_epoch"])
        seeds = info.get("seeds") or sorted(per_seed)
        label = f"{name} · {label_suffix}" if label_suffix and SETTINGS[name].uses_labels else name
        views = results["summary"][name]
        rows.append(Row(label, name, source, view, [int(s) for s in seeds], views.get(view, {}), per_seed,
                        {v: cells for v, cells in views.items() if v != view}, _setting_config(results, name), best))
    return rows


def mean_std(cell: dict | None, digits: int = 4) -> str:
    """``0.0123 ± 0.0010`` (the sample std over seeds); ``—`` when the metric has no value."""
    if not cell:
        return "—"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def value(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _cells(per_seed: list[dict]) -> dict:
    """``{split: {metric: {"mean", "std", "n"}}}`` over the seeds' ``{split: {metric: value}}``."""
    out: dict = {}
    for split in {sp for seed in per_seed for sp in seed}:
        for name in {m for seed in per_seed for m in seed.get(split, {})}:
            vals = np.asarray([v for seed in per_seed
                               if (v := seed.get(split, {}).get(name)) is not None], dtype=np.float64)
            if len(vals):
                out.setdefault(split, {})[name] = {"mean": float(vals.mean()), "n": len(vals),
                                                   "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    return out


GROUPS = ("labeled", "not labeled")


def labeled_user_cells(base_dir: Path, run_dir: Path, setting: str = "E3") -> dict | None:
    """E0 (from ``base_dir``) and ``setting`` (from ``run_dir``) averaged, seed by seed, over the users the run
    labeled and over the evaluated users it did not: ``{"labeled": {"E0": cells, setting: cells},
    "not labeled": {...}, "seeds": [...]}`` with cells as in ``results.json`` and ``cells[split]["users"]``
    the number of the group's users with a positive in that split. Labels are about their own users first;
    over all users their effect is diluted by everyone the run never labeled, and the two groups tell a
    user-side effect (only the labeled users gain) from an item-side one (cold items that got any embedding
    gain for everyone). None when no seed has per-user metrics for both (results stored before they were
    kept)."""
    per_group: dict[str, dict[str, list[dict]]] = {g: {"E0": [], setting: []} for g in GROUPS}
    seeds = []
    for path in sorted((Path(run_dir) / "runs" / setting).glob("seed*.users.npz")):
        seed = int(path.name[len("seed"):-len(".users.npz")])
        mine, base = load_user_metrics(run_dir, setting, seed), load_user_metrics(base_dir, "E0", seed)
        if mine is None or base is None or "labeled" not in mine:
            continue
        for group, users in zip(GROUPS, (mine["labeled"], np.setdiff1d(base["users"], mine["labeled"]))):
            per_group[group]["E0"].append(subset_metrics(base, users))
            per_group[group][setting].append(subset_metrics(mine, users))
        seeds.append(seed)
    if not seeds:
        return None
    return {**{g: {name: _cells(v) for name, v in by.items()} for g, by in per_group.items()}, "seeds": seeds}


def recall20_pair(cells: dict, split: str, setting: str = "E3") -> tuple[dict | None, dict | None]:
    """(E0, ``setting``) Recall@20 cells of one group of :func:`labeled_user_cells` in ``split``."""
    return cells["E0"].get(split, {}).get("recall@20"), cells[setting].get(split, {}).get("recall@20")
