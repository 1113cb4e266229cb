"""``coldlabel demo``: the main job end to end on the embedded default, one step after another.

synthesize → prepare → retrieval build → label users inline on the local llama.cpp server (SQLite store,
no broker) → export edges/triplets → report. Every step is the same code the individual commands run and
each is idempotent, so re-running the demo after an interruption continues where it stopped: prepared data
and retrieval artefacts are reused, finished users are skipped, and answered LLM calls come from the cache.
"""
from __future__ import annotations

import typer

from coldlabel.cli.common import console, open_store, settings_from
from coldlabel.cli.data import print_stats
from coldlabel.cli.label import run_inline_with_progress
from coldlabel.cli.retrieval import build_with_progress
from coldlabel.data import synth
from coldlabel.data.prepare import prepare
from coldlabel.data.workspace import Workspace
from coldlabel.errors import RunDegraded
from labeler.report import write_report
from labeler.runs import export_run, prepare_resume, start_run

app = typer.Typer(add_completion=False)

# The demo's starting values (a file, env var or --set still wins): the packaged SmolLM2-135M on 2 CPU
# cores answers a thesis-sized user (8 subcategories x 80 candidates) in 2-3 minutes; this is ~30-60 s.
# Retrieval keeps the thesis settings, so later commands on the same workspace reuse its artefacts.
DEMO_DEFAULTS = [
    "labeler.top_k_subcategories=3",
    "labeler.max_candidates_per_subcategory=20",
    "labeler.items_per_subcategory=3",
    "labeler.final_top_k=6",
    "labeler.history_items=10",
]


@app.command(help="Run the main job end to end on the embedded default.")
def demo_command(
    ctx: typer.Context,
    preset: str = typer.Option("small", "--preset", help="Synthetic preset: tiny | small | beauty | health"),
    dataset: str = typer.Option("demo", "--dataset", "-d", help="Workspace name."),
    users: int = typer.Option(5, "--users", "-n", help="How many users to label with the local LLM."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Synthesize -> prepare -> retrieval -> label (inline, local LLM) -> export -> report."""
    settings = settings_from(ctx, command_defaults=DEMO_DEFAULTS)
    ws = Workspace.of(settings.data.root, dataset)

    console.rule(f"[bold]1/6 synthesize ({preset}, seed {seed})")
    if ws.raw.exists() and any(ws.raw.iterdir()):
        console.print(f"raw files already in {ws.raw}, keeping them")
    else:
        console.print(str(synth.generate(preset, ws.root, seed=seed)))

    console.rule("[bold]2/6 prepare")
    prepare(ws, settings.data)
    print_stats(ws, compare=None)

    console.rule("[bold]3/6 retrieval: MiniLM → Two-Tower → FAISS → leaves")
    build_with_progress(ws, settings)

    console.rule(f"[bold]4/6 label {users} users inline on endpoint '{settings.labeler.endpoint}'")
    store = open_store(settings)
    run_id = f"demo-{dataset}-{users}"
    existing = {r.id for r in store.list_runs(dataset=dataset)}
    if run_id not in existing:
        start_run(store, settings, dataset, users=users, run_id=run_id, name="demo")
        todo = store.incomplete_users(run_id)
    else:
        todo = prepare_resume(store, settings, run_id).users
        console.print(f"run {run_id} exists: {len(todo)} users left to label")
    if todo:
        try:
            run_inline_with_progress(settings, store, run_id, todo)
        except RunDegraded as exc:  # the tiny demo model falls back often: say so, and still show the report
            console.print(f"[yellow]warning:[/] {exc}")

    console.rule("[bold]5/6 export")
    out = ws.root / "labels" / run_id
    counts = export_run(store, run_id, out)
    console.print(f"{counts['edges']} pseudo edges and {counts['triplets']} triplets → {out}")

    console.rule("[bold]6/6 report")
    path = write_report(store, run_id, settings, ws.root / "reports" / run_id)
    console.print(f"report: [bold]{path}[/] (and report.html, plots beside it)")
