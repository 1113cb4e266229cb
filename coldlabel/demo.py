"""``coldlabel demo``: the main job end to end on the embedded default, one step after another.

Each step is the same code the individual commands run and each is idempotent, so re-running the demo
after an interruption continues where it stopped.
"""
from __future__ import annotations

import typer
from rich.console import Console

from coldlabel.cli import settings_from
from retrieval.workspace import Workspace

console = Console()


def demo_command(
    ctx: typer.Context,
    preset: str = typer.Option("small", "--preset", help="Synthetic preset: tiny | small | beauty | health"),
    dataset: str = typer.Option("demo", "--dataset", "-d", help="Workspace name."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Synthesize -> prepare -> show statistics."""
    from retrieval import synth
    from retrieval.data_cli import _print_stats
    from retrieval.prepare import prepare

    settings = settings_from(ctx)
    ws = Workspace.of(settings.data.root, dataset)
    console.rule(f"[bold]1. synthesize ({preset}, seed {seed})")
    if (ws.raw).exists() and any(ws.raw.iterdir()):
        console.print(f"raw files already in {ws.raw}, keeping them")
    else:
        synth.generate(preset, ws.root, seed=seed)
    console.rule("[bold]2. prepare")
    prepare(ws, settings.data)
    _print_stats(ws, compare=None)
