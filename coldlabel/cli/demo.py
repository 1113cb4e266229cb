"""``coldlabel demo``: ``coldlabel run`` on a synthetic preset with caps the packaged SmolLM2 can answer on a
laptop CPU, so the whole job (data → retrieval → labels → training → report) ends in minutes.

Every step is the code ``coldlabel run`` runs and each is idempotent: re-running the demo after an
interruption continues where it stopped (prepared data, retrieval artefacts and finished labels are reused,
answered LLM calls come from the cache, trained seeds are reused).
"""
from __future__ import annotations

from typing import Optional

import typer

from coldlabel.cli.common import int_list, users_option
from coldlabel.cli.run import DEFAULT_LABELERS, RunOptions, run_job

app = typer.Typer(add_completion=False)

# The demo's starting values (a file, env var or --set still wins): the packaged SmolLM2-135M on 2 CPU
# cores answers a thesis-sized user (8 subcategories x 80 candidates) in 2-3 minutes; this is ~30-60 s.
# The labelers without an LLM use the same caps, so they are compared on equal terms. Retrieval keeps the
# thesis settings, so later commands on the same workspace reuse its artefacts.
DEMO_DEFAULTS = [
    "labeler.top_k_subcategories=3",
    "labeler.max_candidates_per_subcategory=20",
    "labeler.items_per_subcategory=3",
    "labeler.final_top_k=6",
    "labeler.history_items=10",
    "trainer.epochs=10",
]


@app.command(help="coldlabel run on a synthetic preset, with caps the local SmolLM2 answers in minutes.")
def demo_command(
    ctx: typer.Context,
    preset: str = typer.Option("small", "--preset", help="Synthetic preset: tiny | small | beauty | health"),
    dataset: str = typer.Option("demo", "--dataset", "-d", help="Workspace name."),
    users: str = typer.Option("5", "--users", "-n", help="How many users each labeler labels (the first N)."),
    labelers: str = typer.Option(DEFAULT_LABELERS, "--labelers", "-l", help="As for coldlabel run."),
    seeds: str = typer.Option("0,1", "--seeds", help="Training seeds."),
    seed: int = typer.Option(0, "--seed", help="Synthesis seed."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Training epochs (demo default 10)."),
) -> None:
    opts = RunOptions(dataset, preset, None, users_option(users), labelers, tuple(int_list(seeds, "--seeds")),
                      epochs, False, seed)
    run_job(ctx, opts, command_defaults=DEMO_DEFAULTS)
