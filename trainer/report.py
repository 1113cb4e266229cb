"""The experiment report: a dataset's stored results (and the labeling runs behind them) as one Markdown
file and one self-contained HTML file, rebuilt from ``results.json`` and the run files without training.

A second adapter beside :mod:`trainer.data`: it reads the project's store and the labeler's run figures
(:func:`labeler.report.run_label_stats`) and draws with matplotlib.

What it shows, in the thesis' form:

* cold and warm tables like Tables 5.2/5.3: rows E0–E3 and the baselines, columns Recall/NDCG@5/10/20 and
  MRR, mean ± std over seeds (the numbers of ``results.json``, rounded to 4 digits);
* the per-seed spread of Recall@20;
* Recall@20 bars, cold and warm, with the std over seeds as error bars (Figures 5.1–5.3);
* each run's labels: how many, how many on cold items, agreement with the test split and — on synthetic
  data — precision against the planted tastes, every labeler side by side with the Two-Tower's own picks;
* with several runs on synthetic data: the cold gain (E3 − E0 cold Recall@20) against the run's
  planted-taste precision.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # plots go to files, never to a window
import matplotlib.pyplot as plt

from coldlabel.config import Settings
from coldlabel.data.workspace import Workspace
from coldlabel.errors import RunNotFound, TrainerError
from coldlabel.store import Store
from labeler.report import RunLabelStats, html_page, planted_truth, run_label_stats
from trainer.jobs import NO_LABELS, results_dir
from trainer.results import (
    GROUPS,
    HEADERS,
    METRICS,
    ORDER,
    Row,
    labeled_user_cells,
    mean_std,
    read_results,
    recall20_pair,
    rows_of,
    value,
)

SPLITS = ("cold", "warm")


@dataclass
class RunPoint:
    """One labeling run in the "cold gain vs label precision" figure."""
    run_id: str
    endpoint: str        # which labeler: the figure names points by it
    precision: float | None
    gain: float | None   # E3 − E0 cold Recall@20 (means over seeds)
    gain_labeled: float | None = None  # the same over only the users the run labeled


def _collect(settings: Settings, dataset: str, run_ids: Sequence[str]) -> tuple[list[Row], list[str]]:
    """Every row of the no-labels directory and of each run's directory, in thesis order; and notes."""
    notes, rows = [], []
    base = read_results(results_dir(settings.data.root, dataset, None))
    if base is None:
        notes.append(f"No results in `experiments/{NO_LABELS}/` (E0 and the baselines): "
                     f"`coldlabel train -d {dataset} --settings E0,TwoTower,GRU4Rec`.")
    else:
        rows += rows_of(base, results_dir(settings.data.root, dataset, None), NO_LABELS)
    for run_id in run_ids:
        out_dir = results_dir(settings.data.root, dataset, run_id)
        res = read_results(out_dir)
        if res is None:
            notes.append(f"No results for run `{run_id}`: `coldlabel train -d {dataset} --run {run_id} "
                         "--settings E1,E2,E3`.")
            continue
        rows += rows_of(res, out_dir, run_id, run_id if len(run_ids) > 1 else "")
    if not rows:
        raise TrainerError(f"no stored results for {dataset} under {results_dir(settings.data.root, dataset, None).parent}"
                           f": run `coldlabel train -d {dataset} ...` first")
    sources = [NO_LABELS, *run_ids]
    rows.sort(key=lambda r: (ORDER.index(r.setting) if r.setting in ORDER else len(ORDER), sources.index(r.source)))
    return rows, notes


def _table(rows: list[Row], split: str) -> list[str]:
    lines = ["| setting | seeds | " + " | ".join(HEADERS) + " |", "|---|---|" + "---|" * len(HEADERS)]
    for row in rows:
        lines.append(f"| {row.label} | {len(row.seeds)} | "
                     + " | ".join(mean_std(row.cell(split, m)) for m in METRICS) + " |")
    return lines


def _spread(rows: list[Row]) -> list[str]:
    seeds = sorted({s for r in rows for s in r.per_seed})
    lines = ["| setting | split | " + " | ".join(f"seed {s}" for s in seeds) + " | min – max |",
             "|---|---|" + "---|" * (len(seeds) + 1)]
    for row in rows:
        for split in SPLITS:
            vals = {s: row.per_seed[s].get(split, {}).get("recall@20") for s in row.per_seed}
            got = [v for v in vals.values() if v is not None]
            span = f"{min(got):.4f} – {max(got):.4f}" if got else "—"
            lines.append(f"| {row.label} | {split} | " + " | ".join(value(vals.get(s)) for s in seeds)
                         + f" | {span} |")
    return lines


SWITCHES = ("seed", "model", "use_sim", "use_pair")  # set per (setting, seed), not by the user


def _setup(rows: list[Row]) -> list[str]:
    """Where each row comes from and how it was trained; settings that differ from the first row's are named,
    so rows trained at different times with different knobs are not compared unawares."""
    ref = rows[0].config
    lines = ["| setting | results | view | seeds | epochs | best epoch per seed | other settings than the first row |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        diff = [f"{k}={v}" for k, v in sorted(row.config.items())
                if k not in SWITCHES and k != "epochs" and ref.get(k) != v]
        best = ", ".join(str(row.best_epochs[s]) for s in sorted(row.best_epochs)) or "—"
        lines.append(f"| {row.label} | `{row.source}` | `{row.view}` | {','.join(map(str, row.seeds))} | "
                     f"{row.config.get('epochs', '—') if row.setting != 'TwoTower' else '—'} | {best} | "
                     f"{', '.join(diff) or '—'} |")
    return lines


def _other_views(rows: list[Row]) -> list[str]:
    """Recall@20 of each setting in its other views, e.g. the ID-only models over the whole catalog."""
    lines = ["| setting | view | cold Recall@20 | warm Recall@20 |", "|---|---|---|---|"]
    lines += [f"| {row.label} | `{view}` | {mean_std(cells.get('cold', {}).get('recall@20'))} | "
              f"{mean_std(cells.get('warm', {}).get('recall@20'))} |"
              for row in rows for view, cells in row.other_views.items()]
    return lines if len(lines) > 2 else []


def _recall_figure(rows: list[Row], path: Path, title: str) -> None:
    """Recall@20, cold and warm side by side, std over seeds as error bars (thesis Figures 5.1–5.3)."""
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.1 * len(rows) + 2), 3.6))
    labels = [r.label for r in rows]
    for ax, split, color in zip(axes, SPLITS, ("#4f81bd", "#c0504d")):
        cells = [r.cell(split, "recall@20") for r in rows]
        means = [c["mean"] if c else 0.0 for c in cells]
        stds = [c["std"] if c else 0.0 for c in cells]
        bars = ax.bar(range(len(rows)), means, yerr=stds, capsize=3, color=color)
        ax.bar_label(bars, fmt="%.4f", fontsize=7, padding=2)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{split} items")
        ax.set_ylabel("Recall@20")
        ax.set_ylim(0, max(m + s for m, s in zip(means, stds)) * 1.25 or 1e-3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _precision_figure(stats: list[RunLabelStats], path: Path) -> None:
    """Planted-taste precision of each labeler's edges beside the Two-Tower's own picks for the same users."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(stats) + 2), 3.2))
    xs = range(len(stats))
    runs = [100 * (s.labels.taste_hits or 0) / max(s.labels.picks, 1) for s in stats]
    tt = [100 * (s.two_tower.taste_hits or 0) / max(s.two_tower.picks, 1) for s in stats]
    ax.bar([x - 0.2 for x in xs], runs, width=0.4, label="run's edges", color="#9bbb59")
    ax.bar([x + 0.2 for x in xs], tt, width=0.4, label="Two-Tower top-n", color="#bbbbbb")
    ax.set_xticks(list(xs), [f"{s.run_id}\n{s.endpoint}" for s in stats], fontsize=8)
    ax.set_ylabel("in planted taste leaves (%)")
    ax.set_title("Label precision against the planted truth")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _gain_figure(points: list[RunPoint], path: Path, dataset: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, p in enumerate(points):
        ax.scatter(100 * p.precision, p.gain, color="#4f81bd", label="all test users" if i == 0 else None)
        if p.gain_labeled is not None:
            ax.scatter(100 * p.precision, p.gain_labeled, color="#c0504d", marker="s",
                       label="the run's labeled users" if i == 0 else None)
        name = p.run_id.removeprefix(f"{dataset}-")  # run ids made by `coldlabel run` start with it
        ax.annotate(name if name.startswith(p.endpoint) else f"{p.endpoint} · {name[:12]}",
                    (100 * p.precision, p.gain), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.axhline(0, color="#888888", linewidth=0.8)
    ax.set_xlabel("run's edges in planted taste leaves (%)")
    ax.set_ylabel("E3 − E0 cold Recall@20")
    ax.set_title("Cold gain vs label precision")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label_stats(settings: Settings, run_ids: Sequence[str]) -> tuple[list[RunLabelStats], list[str]]:
    stats, notes = [], []
    if not run_ids:
        return stats, notes
    with Store(settings.store_url()) as store:
        for run_id in run_ids:
            try:
                stats.append(run_label_stats(store, run_id, settings))
            except RunNotFound:
                notes.append(f"Run `{run_id}` is not in the store (labels from TSV files?): no label statistics.")
    return stats, notes


def _user_groups(settings: Settings, dataset: str, run_ids: Sequence[str]) -> dict[str, dict]:
    """Each run's :func:`trainer.results.labeled_user_cells` (read once; runs without per-user metrics left out)."""
    base = results_dir(settings.data.root, dataset, None)
    got = {r: labeled_user_cells(base, results_dir(settings.data.root, dataset, r)) for r in run_ids}
    return {r: cells for r, cells in got.items() if cells is not None}


def _gain_points(rows: list[Row], stats: list[RunLabelStats], groups: dict[str, dict]) -> list[RunPoint]:
    e0 = next((r.cell("cold", "recall@20") for r in rows if r.setting == "E0"), None)
    points = []
    for s in stats:
        e3 = next((r.cell("cold", "recall@20") for r in rows if r.setting == "E3" and r.source == s.run_id), None)
        gain = e3["mean"] - e0["mean"] if e3 and e0 else None
        a, b = recall20_pair(groups[s.run_id]["labeled"], "cold") if s.run_id in groups else (None, None)
        points.append(RunPoint(s.run_id, s.endpoint, s.taste_precision, gain,
                               b["mean"] - a["mean"] if a and b else None))
    return points


def _on_labeled_users(stats: list[RunLabelStats], groups: dict[str, dict]) -> list[str]:
    """E0 and E3 over each run's labeled users and over the others (per-user metrics stored with the results)."""
    endpoint = {s.run_id: s.endpoint for s in stats}
    lines = []
    for run_id, got in groups.items():
        for group in GROUPS:
            cells = []
            for split in SPLITS:
                a, b = recall20_pair(got[group], split)
                change = f"{b['mean'] - a['mean']:+.4f} ({100 * (b['mean'] / a['mean'] - 1):+.1f}%)" \
                    if a and b and a["mean"] else "—"
                users = got[group]["E3"].get(split, {}).get("users", {}).get("mean")
                cells += [str(int(users)) if users is not None else "—", mean_std(a), mean_std(b), change]
            lines.append(f"| `{run_id}` | {endpoint.get(run_id, '—')} | {group} | {len(got['seeds'])} | "
                         + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["## On the users each run labeled, and on the others", "",
            "The same Recall@20, averaged over the test users a run labeled (its edges and triplets name them) "
            "and over the test users it did not, E0 on the same users and seeds. A gain that only the labeled "
            "users see comes from what the labels say about them; one that everyone sees comes from the cold "
            "items having been trained at all.", "",
            "| run | endpoint | users | seeds | cold users | E0 cold | E3 cold | cold change | warm users | "
            "E0 warm | E3 warm | warm change |", "|---|---|---|---|---|---|---|---|---|---|---|---|", *lines, ""]


def _pct(hits: int | None, picks: int) -> str:
    return "—" if hits is None or not picks else f"{100 * hits / picks:.1f}%"


def _embedded(md: str, base: Path) -> str:
    """The Markdown with every linked PNG under ``base`` inlined as a data URI: one self-contained HTML file."""
    def inline(match: re.Match) -> str:
        path = base / match.group(2)
        if not path.is_file():
            return match.group(0)
        return f"![{match.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
    return re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", inline, md)


def build_report(settings: Settings, dataset: str, run_ids: Sequence[str] = (), name: str | None = None) -> Path:
    """Write ``<data.root>/<dataset>/reports/<name>.md`` and ``.html`` (figures in ``<name>-figures/``,
    embedded in the HTML); returns the Markdown path."""
    run_ids = list(dict.fromkeys(run_ids))
    ws = Workspace.of(settings.data.root, dataset)
    rows, notes = _collect(settings, dataset, run_ids)
    stats, more = _label_stats(settings, run_ids)
    notes += more
    synthetic = planted_truth(ws) is not None
    name = name or "experiments" + "".join(f"-{r}" for r in run_ids)
    if not re.fullmatch(r"[\w.+-]+", name):
        raise TrainerError(f"report name {name!r}: use letters, digits, '.', '_', '+' or '-'")
    reports = ws.root / "reports"
    figures = reports / f"{name}-figures"
    figures.mkdir(parents=True, exist_ok=True)
    _recall_figure(rows, figures / "recall20.png", f"Recall@20 on {dataset} (mean ± std over seeds)")
    fig_rel = f"{figures.name}"
    lines = [f"# Experiments on `{dataset}`", "",
             f"Runs: {', '.join(f'`{r}`' for r in run_ids) or 'none (settings without labels only)'}. "
             "Rebuilt from the stored results (`experiments/*/results.json`); nothing was trained for it.", ""]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    lines += ["A cold item appears in the test split only. Cells: mean ± sample std over seeds. E0–E3 re-rank the "
              "Two-Tower candidates in the configured mode; the ID-only models rank them by their own score.", "",
              "## Setup", "", *_setup(rows), ""]
    for split, number in (("cold", "5.2"), ("warm", "5.3")):
        lines += [f"## {split.capitalize()}-start results (as thesis Table {number})", "", *_table(rows, split), ""]
    lines += ["## Recall@20, cold and warm (as thesis Figures 5.1–5.3)", "",
              f"![Recall@20 cold and warm]({fig_rel}/recall20.png)", "",
              "## Per-seed spread of Recall@20", "", *_spread(rows), ""]
    if other := _other_views(rows):
        lines += ["## Other views", "", "`candidates/sas`: the model's own score over the same Two-Tower candidates; "
                  "`full/sas`: over every unseen item of the catalog (cold items included).", "", *other, ""]
    if stats:
        lines += ["## Labels per run", "",
                  "| run | endpoint | model | status | users done | edges | triplets | edges on cold items "
                  "| from fallbacks |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| `{s.run_id}` | {s.endpoint} | {s.model} | {s.status} | {s.users_done} | {s.edges} | "
                  f"{s.triplets} | {_pct(s.edges_on_cold, s.edges)} | {_pct(s.edges_from_fallback, s.edges)} |"
                  for s in stats]
        lines += ["", "### Agreement with held-out data (evaluation only)", "",
                  "| run | endpoint | picks | in test interactions | in planted taste leaves "
                  "| Two-Tower top-n: in test | Two-Tower top-n: in taste leaves |", "|---|---|---|---|---|---|---|"]
        lines += [f"| `{s.run_id}` | {s.endpoint} | {s.labels.picks} | {_pct(s.labels.test_hits, s.labels.picks)} | "
                  f"{_pct(s.labels.taste_hits, s.labels.picks)} | {_pct(s.two_tower.test_hits, s.two_tower.picks)} | "
                  f"{_pct(s.two_tower.taste_hits, s.two_tower.picks)} |" for s in stats]
        lines.append("")
        if synthetic:
            _precision_figure(stats, figures / "label_precision.png")
            lines += [f"![label precision]({fig_rel}/label_precision.png)", ""]
        else:
            lines += ["(No planted truth: this is not a synthetic dataset.)", ""]
    groups = _user_groups(settings, dataset, run_ids)
    lines += _on_labeled_users(stats, groups)
    points = [p for p in _gain_points(rows, stats, groups) if p.precision is not None and p.gain is not None]
    if synthetic and len(run_ids) > 1:
        lines += ["## Cold gain vs label precision", ""]
        if len(points) > 1:
            _gain_figure(points, figures / "gain_vs_precision.png", dataset)
            lines += ["| run | planted-taste precision | E3 − E0 cold Recall@20 | on its labeled users |",
                      "|---|---|---|---|",
                      *[f"| `{p.run_id}` | {100 * p.precision:.1f}% | {p.gain:+.4f} | "
                        f"{'—' if p.gain_labeled is None else f'{p.gain_labeled:+.4f}'} |" for p in points], "",
                      f"![cold gain vs label precision]({fig_rel}/gain_vs_precision.png)", ""]
        else:
            lines += ["Needs E0 and, for at least two runs, E3 results and labels in the store.", ""]
    md = "\n".join(lines) + "\n"
    path = reports / f"{name}.md"
    path.write_text(md)
    (reports / f"{name}.html").write_text(html_page(_embedded(md, reports), f"{dataset}: experiments"))
    return path
