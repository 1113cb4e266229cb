"""The job behind ``coldlabel train``: which settings go into which results directory, with which labels.

A second adapter beside :mod:`trainer.data`: it speaks the project's settings and errors so the CLI stays a
thin shell, and leaves training and evaluation to :mod:`trainer.experiments`.

Results live under ``<data.root>/<dataset>/experiments/``:

* ``no-labels/`` for every setting that reads no labels (E0, TwoTower, SASRec, GRU4Rec, BERT4Rec). Their
  result does not depend on a labeling run, so all runs share it and compare against the same E0.
* ``<run_id>/`` for E1–E3, trained on that run's labels (read from the SQL store, or from exported TSV files
  with ``--labels-tsv``; then the directory is ``--run`` if given, else ``tsv-<folder name>``).

A rerun reuses every finished (setting, seed) whose key is unchanged; a killed training resumes from its
last checkpoint (both are :mod:`trainer.experiments` behaviour).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from coldlabel.config import Settings
from coldlabel.errors import TrainerError
from trainer import data
from trainer.config import TrainConfig
from trainer.dataset import Labels
from trainer.experiments import SETTINGS, run_experiments
from trainer.train import CheckpointMismatch, Hook

NO_LABELS = "no-labels"


def experiments_root(data_root: str | Path, dataset: str) -> Path:
    return data.open_workspace(data_root, dataset).root / "experiments"


def results_dir(data_root: str | Path, dataset: str, name: str | None) -> Path:
    """``experiments/<name>``; ``None`` is the shared directory of the settings that read no labels."""
    return experiments_root(data_root, dataset) / (name or NO_LABELS)


@dataclass(frozen=True)
class TrainJob:
    dataset: str
    settings: tuple[str, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    run_id: str | None = None
    labels_tsv: Path | None = None
    epochs: int | None = None

    @property
    def label_name(self) -> str | None:
        """The results directory of the label-using settings (None: no label source given)."""
        if self.run_id:
            return self.run_id
        return f"tsv-{self.labels_tsv.resolve().name}" if self.labels_tsv is not None else None


@dataclass
class Events:
    """What a progress display hears: each (setting, seed) before and after, and the training hook."""
    before_run: Callable[[str, int], None] | None = None
    on_run: Callable[[dict], None] | None = None
    hook: Hook = field(default=lambda event, info: None)
    on_labels: Callable[[Labels], None] | None = None


@dataclass
class GroupResult:
    """One results directory written by a job: its name, path, what ``results.json`` holds, the runs."""
    name: str
    out_dir: Path
    report: dict
    runs: list[dict]


def check_settings(names: Sequence[str], has_labels: bool) -> None:
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        raise TrainerError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    needing = [s for s in names if SETTINGS[s].uses_labels]
    if needing and not has_labels:
        raise TrainerError(f"{', '.join(needing)} train on labels: name a labeling run with --run RUN_ID "
                           "(or exported files with --labels-tsv DIR)")


def base_config(settings: Settings, epochs: int | None) -> TrainConfig:
    try:
        return data.train_config(settings, **({"epochs": epochs} if epochs else {}))
    except ValueError as exc:
        raise TrainerError(f"trainer settings: {exc}") from None


def run_train(job: TrainJob, settings: Settings, events: Events | None = None) -> list[GroupResult]:
    """Train and evaluate every (setting, seed) of ``job``; returns one :class:`GroupResult` per directory."""
    events = events or Events()
    check_settings(job.settings, job.label_name is not None)
    cfg = base_config(settings, job.epochs)
    ws = data.open_workspace(settings.data.root, job.dataset)
    td = data.load_training_data(ws, settings)
    ev = data.load_eval_data(ws, settings)
    plain = [s for s in job.settings if not SETTINGS[s].uses_labels]
    labelled = [s for s in job.settings if SETTINGS[s].uses_labels]
    groups: list[tuple[str | None, list[str], Labels | None]] = []
    if plain:
        groups.append((None, plain, None))
    if labelled:
        if job.labels_tsv is not None:
            labels = data.labels_from_tsv(ws, td, job.labels_tsv)
        else:
            labels = data.labels_from_store(ws, td, settings.store_url(), job.run_id)
        if events.on_labels is not None:
            events.on_labels(labels)
        groups.append((job.label_name, labelled, labels))
    out: list[GroupResult] = []
    for name, names, labels in groups:
        out_dir = results_dir(settings.data.root, job.dataset, name)
        runs: list[dict] = []

        def on_run(res: dict, runs: list[dict] = runs) -> None:
            runs.append(res)
            if events.on_run is not None:
                events.on_run(res)
        try:
            report = run_experiments(td, ev, cfg, labels, out_dir, names, job.seeds, hook=events.hook,
                                     on_run=on_run, before_run=events.before_run)
        except CheckpointMismatch as exc:
            raise TrainerError(str(exc)) from None
        out.append(GroupResult(name or NO_LABELS, out_dir, report, runs))
    return out
