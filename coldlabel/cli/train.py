"""``coldlabel train``: settings × seeds on a dataset (and a labeling run's labels), with a progress bar that
shows the loss terms, and the cold/warm summary at the end. ``trainer/jobs.py`` says where results go."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coldlabel.cli.common import console, int_list, settings_from
from trainer.dataset import Labels
from trainer.jobs import Events, GroupResult, TrainJob, run_train
from trainer.results import mean_std, rows_of

app = typer.Typer(add_completion=False)


def train_progress() -> Progress:
    """The bars of :class:`TrainProgress` (also used by ``coldlabel run``)."""
    return Progress(TextColumn("{task.description:<24}"), BarColumn(bar_width=12), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console)


class TrainProgress:
    """One bar per (setting, seed): steps over all epochs, then the last epoch's loss terms and val NDCG."""

    def __init__(self, bar: Progress, labels: str = "") -> None:
        self.bar = bar
        self.labels = f" · {labels}" if labels else ""  # whose labels E1-E3 train on, when several runs are trained
        self.task = None
        self.trained = self.reused = 0

    def before_run(self, setting: str, seed: int) -> None:
        self.task = self.bar.add_task(f"{setting}{self.labels} seed {seed}", total=None, note="")

    def hook(self, event: str, info: dict) -> None:
        if event == "start":
            steps = max(info["steps"], 1)
            self.bar.update(self.task, total=info["epochs"] * steps, completed=(info["resumed_from"] or 0) * steps)
            if info["resumed_from"]:
                self.bar.console.print(f"{self.bar.tasks[self.task].description}: resumed after epoch "
                                       f"{info['resumed_from']} (checkpoint)")
        elif event == "step":
            self.bar.advance(self.task)
        elif event == "epoch":
            terms = " ".join(f"{k} {info[k]:.3f}" for k in ("main", "sim", "pair") if info.get(k) is not None)
            self.bar.update(self.task, note=f"ep {info['epoch']} {terms} val {info['val_ndcg']:.4f}")
        elif event == "end":
            total = self.bar.tasks[self.task].total or 1
            self.bar.update(self.task, completed=total)

    def on_run(self, res: dict) -> None:
        if res["cached"]:
            self.reused += 1
            self.bar.update(self.task, total=1, completed=1, note="reused (finished, key unchanged)")
            return
        self.trained += 1
        task = self.bar.tasks[self.task]
        train = res.get("train")
        note = "evaluated (nothing to train)" if train is None else (
            f"{task.fields.get('note', '')} best ep {train['best_epoch']}"
            + (" (early stop)" if train["stopped_early"] else ""))
        self.bar.update(self.task, total=task.total or 1, completed=task.total or 1, note=note)
        for warning in res.get("warnings", []):
            console.print(f"[yellow]{res['setting']} seed {res['seed']}: {warning}[/]")


def _labels_line(labels: Labels) -> None:
    e, t = labels.counts.get("edges", {}), labels.counts.get("triplets", {})
    console.print(f"labels {labels.source}: {labels.n_edges} pseudo edges kept of {e.get('read', 0)} read, "
                  f"{labels.n_triplets} triplets kept of {t.get('read', 0)}")


def summary_table(groups: list[GroupResult]) -> Table:
    """Cold and warm Recall@20 / NDCG@20 of every setting trained or reused, in its primary view."""
    rows = [row for group in groups for row in rows_of(group.report, group.out_dir, group.name)]
    views = ", ".join(f"{r.label} {r.view} ({r.source}, seeds {','.join(map(str, r.seeds))})" for r in rows)
    table = Table(title="mean±std over seeds", caption=views, box=box.SIMPLE_HEAD, caption_justify="left")
    table.add_column("setting", no_wrap=True)
    for col in ("cold R@20", "cold N@20", "warm R@20", "warm N@20"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row.label, *[mean_std(row.cell(split, m)).replace(" ± ", "±") for split in ("cold", "warm")
                                   for m in ("recall@20", "ndcg@20")])
    return table


@app.command()
def train_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Workspace name under data.root."),
    run: Optional[str] = typer.Option(None, "--run", help="Labeling run whose labels E1–E3 train on."),
    labels_tsv: Optional[Path] = typer.Option(None, "--labels-tsv", help="Exported edges.tsv/triplets.tsv folder "
                                                                        "instead of the store."),
    settings_: str = typer.Option("E0,E1,E2,E3,TwoTower", "--settings", "-s",
                                  help="Comma-separated: E0..E3, TwoTower, SASRec, GRU4Rec, BERT4Rec."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default trainer.epochs)."),
) -> None:
    """Train and evaluate settings × seeds; finished pairs are reused, a killed training resumes.

    Results go to <data.root>/<dataset>/experiments/<run>/ (E1–E3) and .../experiments/no-labels/ (the
    settings that read no labels); results.json there holds mean ± std over seeds."""
    settings = settings_from(ctx)
    names = tuple(s.strip() for s in settings_.split(",") if s.strip())
    job = TrainJob(dataset, names, tuple(int_list(seeds, "--seeds")), run, labels_tsv, epochs)
    with train_progress() as bar:
        progress = TrainProgress(bar)
        groups = run_train(job, settings, Events(progress.before_run, progress.on_run, progress.hook, _labels_line))
    console.print(summary_table(groups))
    for group in groups:
        console.print(f"results: {group.out_dir / 'results.json'}")
    console.print(f"{progress.trained} (setting, seed) pairs trained, {progress.reused} reused")
