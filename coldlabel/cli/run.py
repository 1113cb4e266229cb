"""``coldlabel run``: the whole job in one command, each step skipped while its inputs are unchanged.

data (synthesize a preset, or adopt your own Amazon-format files) → prepare → retrieval build → label the
same users with every labeler (the LLM, and the labelers that need no LLM: random, the Two-Tower's own
picks and, on synthetic data, the planted-truth oracle) → train E0 once and E3 on each labeler's run →
one report → the cold/warm headline.

What makes a rerun cheap is the same machinery the single commands use: ``prepare`` and ``retrieval build``
are no-ops on unchanged inputs; a labeling run's id is derived from the dataset, the users and every
setting that shapes its labels, so an unchanged run is found and only its unfinished users are labeled; a
trained (setting, seed) whose key is unchanged is reused, a killed one resumes from its checkpoint.
``coldlabel demo`` is this command on the ``small`` synthetic preset with small LLM caps.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from coldlabel.cli.common import console, int_list, open_store, settings_from, users_option
from coldlabel.cli.data import print_stats
from coldlabel.cli.label import dispatch
from coldlabel.cli.retrieval import build_with_progress
from coldlabel.cli.train import TrainProgress, train_progress
from coldlabel.config import Settings
from coldlabel.data import synth
from coldlabel.data.prepare import adopt_raw, prepare
from coldlabel.data.workspace import Workspace
from coldlabel.errors import ConfigError, RunDegraded
from coldlabel.store import Store
from labeler.report import write_report
from labeler.runs import dataset_fingerprint, export_run, prepare_resume, prompt_version, start_run
from trainer.jobs import NO_LABELS, Events, GroupResult, TrainJob, results_dir, run_train
from trainer.report import build_report
from trainer.results import labeled_user_cells, mean_std, read_results, recall20_pair, rows_of

app = typer.Typer(add_completion=False)

BUILTIN = ("random", "two_tower", "oracle")
# run's starting values (a file, env var or --set still wins): label the users most recently active, the
# ones whose next items a label can change, not the earliest ones by index
RUN_DEFAULTS = ["labeler.user_order=recent"]
DEFAULT_LABELERS = "llm,random,two_tower,oracle"


@dataclass(frozen=True)
class Labeler:
    """One labeler of the comparison: a name for tables, the endpoint it asks, and its own settings."""
    name: str                   # "llm", "random", "oracle@0.9", ...
    endpoint: str
    overrides: tuple[str, ...] = ()


def parse_labelers(text: str, settings: Settings) -> list[Labeler]:
    """``llm`` is ``labeler.endpoint``; ``oracle@P`` is the oracle at precision P; any configured endpoint
    name is accepted as well (e.g. a hosted model beside the local one). Checked before any work starts."""
    out: list[Labeler] = []
    for raw in (x.strip() for x in text.split(",")):
        if not raw:
            continue
        name, _, arg = raw.partition("@")
        endpoint = settings.labeler.endpoint if name == "llm" else name
        settings.endpoint(endpoint)  # ConfigError naming the configured endpoints
        overrides: tuple[str, ...] = ()
        if name == "oracle" and arg:
            try:
                p = float(arg)
            except ValueError:
                p = -1.0
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"--labelers: oracle@P needs a number P in [0, 1], got {raw!r}")
            overrides = (f"labeler.oracle_precision={p}",)
        elif arg:
            raise ConfigError(f"--labelers: only the oracle takes @P, got {raw!r}")
        out.append(Labeler(raw, endpoint, overrides))
    if not out:
        raise ConfigError("--labelers: nothing to label with")
    return out


def usable(labelers: list[Labeler], ws: Workspace) -> list[Labeler]:
    """The oracle needs the planted truth of a synthetic dataset: left out (and said so) on real data."""
    if ws.has_truth:
        return labelers
    for lb in labelers:
        if lb.endpoint == "oracle":
            console.print(f"[yellow]{lb.name} left out:[/] the oracle needs the planted truth of a synthetic dataset")
    kept = [lb for lb in labelers if lb.endpoint != "oracle"]
    if not kept:
        raise ConfigError("--labelers: only the oracle was asked for, and this dataset has no planted truth")
    return kept


def run_id_for(settings: Settings, dataset: str, labeler: Labeler, users: int | None) -> str:
    """Same dataset, users and label-shaping settings → same id, so a rerun finds (and finishes) its run."""
    shaping = {"labeler": settings.labeler.model_dump(), "endpoint": settings.endpoint(labeler.endpoint).model_dump(),
               "retrieval": settings.retrieval.model_dump(), "prompt": prompt_version(settings),
               "data": dataset_fingerprint(settings, dataset), "users": users}
    shaping["labeler"]["endpoint"] = labeler.endpoint
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:8]
    label = labeler.name.replace("@", "-p").replace(".", "")
    return f"{dataset}-{label}-{users or 'all'}u-{digest}"


def step_data(ws: Workspace, settings: Settings, preset: str | None, raw: Path | None, seed: int) -> None:
    if raw is not None:
        files = adopt_raw(ws, raw, settings.data.edition)
        console.print(f"raw files: {files.reviews.name} + {files.meta.name} ({files.edition} edition)")
    elif ws.raw.exists() and any(ws.raw.iterdir()):
        console.print(f"raw files already in {ws.raw}, keeping them")
    elif preset is not None:
        console.print(str(synth.generate(preset, ws.root, seed=seed)))
    else:
        raise ConfigError(f"no raw files in {ws.raw}: give --preset NAME (synthetic) or --raw DIR (your files)")
    result = prepare(ws, settings.data)
    if result.rebuilt:
        print_stats(ws, compare=None)
    else:
        console.print("prepared data up to date (inputs and settings unchanged)")


def step_label(settings: Settings, store: Store, dataset: str, labeler: Labeler, users: int | None,
               inline: bool) -> str:
    """Create or finish the labeler's run; returns its id. A degraded run still trains (and says so)."""
    run_id = run_id_for(settings, dataset, labeler, users)
    if run_id in {r.id for r in store.list_runs(dataset=dataset)}:
        todo = prepare_resume(store, settings, run_id).users
        if not todo:
            console.print(f"{labeler.name}: run {run_id} is complete, reused")
            return run_id
        console.print(f"{labeler.name}: run {run_id} exists, {len(todo)} users left to label")
    else:
        start_run(store, settings, dataset, users=users, endpoint=labeler.endpoint, run_id=run_id,
                  name=f"run:{labeler.name}")
        todo = store.incomplete_users(run_id)
    try:
        dispatch(settings, store, run_id, todo, inline=inline or labeler.endpoint in BUILTIN, wait=True)
    except RunDegraded as exc:  # the small local model falls back often: say so and use what it labeled
        console.print(f"[yellow]warning:[/] {exc}")
    ws = Workspace.of(settings.data.root, dataset)
    counts = export_run(store, run_id, ws.root / "labels" / run_id)
    path = write_report(store, run_id, settings, ws.root / "reports" / run_id)
    console.print(f"{labeler.name}: {counts['edges']} pseudo edges, {counts['triplets']} triplets → "
                  f"{ws.root / 'labels' / run_id}; run report {path}")
    return run_id


def step_train(settings: Settings, job: TrainJob, labels: str = "") -> list[GroupResult]:
    with train_progress() as bar:
        progress = TrainProgress(bar, labels)
        return run_train(job, settings, Events(progress.before_run, progress.on_run, progress.hook))


def headline(settings: Settings, dataset: str, runs: dict[str, str]) -> Table:
    """Cold and warm Recall@20 of E0 and of E3 on each labeler's labels, mean ± std over seeds."""
    table = Table(title="cold / warm Recall@20 (mean ± std over seeds)")
    for col in ("model", "labels", "cold R@20", "warm R@20", "its labeled users: cold, warm (E0 → E3)"):
        table.add_column(col, justify="left" if col in ("model", "labels") else "right")
    base = results_dir(settings.data.root, dataset, NO_LABELS)

    def on_labeled(out_dir: Path) -> str:
        got = labeled_user_cells(base, out_dir)
        if got is None:
            return "-"
        pairs = [recall20_pair(got["labeled"], split) for split in ("cold", "warm")]
        return ", ".join(f"{a['mean']:.4f} → {b['mean']:.4f}" if a and b else "-" for a, b in pairs)

    def add(setting: str, source: str, label: str) -> None:
        out_dir = results_dir(settings.data.root, dataset, source)
        results = read_results(out_dir)
        rows = [r for r in rows_of(results, out_dir, source) if r.setting == setting] if results else []
        if rows:
            table.add_row(setting, label, mean_std(rows[0].cell("cold", "recall@20")),
                          mean_std(rows[0].cell("warm", "recall@20")),
                          on_labeled(out_dir) if setting == "E3" else "")

    add("TwoTower", NO_LABELS, "-")
    add("E0", NO_LABELS, "-")
    for name, run_id in runs.items():
        add("E3", run_id, name)
    return table


@dataclass(frozen=True)
class RunOptions:
    dataset: str
    preset: str | None = None
    raw: Path | None = None
    users: int | None = 20
    labelers: str = DEFAULT_LABELERS
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None
    inline: bool = False         # True: label here even when a broker is configured
    seed: int = 0


def run_job(ctx: typer.Context, opts: RunOptions, extra: list[str] | None = None,
            command_defaults: list[str] | None = None) -> None:
    """The five steps; ``command_defaults`` sit under the config file, env vars and --set (the demo's caps)."""
    def settings_with(more: tuple[str, ...] = ()) -> Settings:
        return settings_from(ctx, [*(extra or []), *more], command_defaults=[*RUN_DEFAULTS, *(command_defaults or [])])

    settings = settings_with()
    ws = Workspace.of(settings.data.root, opts.dataset)
    asked = parse_labelers(opts.labelers, settings)

    console.rule(f"[bold]1/5 data: {opts.dataset}")
    step_data(ws, settings, opts.preset, opts.raw, opts.seed)

    console.rule("[bold]2/5 retrieval: MiniLM → Two-Tower → FAISS → leaves")
    build_with_progress(ws, settings)

    chosen = usable(asked, ws)
    console.rule(f"[bold]3/5 label {opts.users or 'all'} users with {', '.join(lb.name for lb in chosen)}")
    store = open_store(settings)
    runs: dict[str, str] = {}
    for lb in chosen:
        runs[lb.name] = step_label(settings_with(lb.overrides), store, opts.dataset, lb, opts.users,
                                   inline=opts.inline)

    console.rule(f"[bold]4/5 train E0, TwoTower, and E3 on each labeler's labels · seeds {list(opts.seeds)}")
    step_train(settings, TrainJob(opts.dataset, ("E0", "TwoTower"), opts.seeds, epochs=opts.epochs))
    for name, run_id in runs.items():
        step_train(settings, TrainJob(opts.dataset, ("E3",), opts.seeds, run_id=run_id, epochs=opts.epochs), name)

    console.rule("[bold]5/5 report")
    path = build_report(settings, opts.dataset, list(runs.values()), name=f"run-{opts.dataset}")
    console.print(headline(settings, opts.dataset, runs))
    console.print(f"report: [bold]{path}[/] (and {path.with_suffix('.html').name} beside it)")


@app.command(help="The whole job: data → prepare → retrieval → label (LLM + no-LLM labelers) → train → report.")
def run_command(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Workspace name (default: the preset)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Synthesize this preset when raw/ is empty: "
                                                                "tiny | small | beauty | health."),
    raw: Optional[Path] = typer.Option(None, "--raw", help="Your own Amazon-format reviews + meta files "
                                                           "(linked into the workspace; see README)."),
    users: str = typer.Option("20", "--users", "-n", help="Users every labeler labels (the N most recently "
                                                          "active: labeler.user_order), or 'all'."),
    labelers: str = typer.Option(DEFAULT_LABELERS, "--labelers", "-l",
                                 help="Comma-separated: llm (labeler.endpoint), random, two_tower, oracle or "
                                      "oracle@P (synthetic data only), or any configured endpoint."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Training seeds."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Training epochs (default trainer.epochs)."),
    inline: bool = typer.Option(False, "--inline", help="Label here even when workers.broker_url is set (by "
                                                        "default users go through the queue when a broker is "
                                                        "configured, and are labeled here when none is)."),
    seed: int = typer.Option(0, "--seed", help="Synthesis seed (with --preset)."),
    extra: list[str] = typer.Option([], "--set", help="Override a setting: section.key=value (repeatable)."),
) -> None:
    if not (dataset or preset):
        raise ConfigError("name the workspace with --dataset (or give --preset)")
    opts = RunOptions(dataset or preset, preset, raw, users_option(users), labelers,
                      tuple(int_list(seeds, "--seeds")), epochs, inline, seed)
    run_job(ctx, opts, extra)
