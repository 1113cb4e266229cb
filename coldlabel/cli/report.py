"""``coldlabel report``: the experiment report of a dataset and its labeling runs, from stored results only
(``trainer/report.py`` says what is in it)."""
from __future__ import annotations

from typing import Optional

import typer

from coldlabel.cli.common import console, settings_from
from trainer.report import build_report

app = typer.Typer(add_completion=False)


@app.command()
def report_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Workspace name under data.root."),
    runs: str = typer.Option("", "--run", "-r", help="Labeling run id(s) whose E1–E3 results to show, "
                                                      "comma-separated."),
    name: Optional[str] = typer.Option(None, "--name", help="Report file name (default experiments[-<run>...])."),
) -> None:
    """Markdown + HTML report of stored training results: cold/warm tables, Recall@20 figures, labels per run.

    Writes <data.root>/<dataset>/reports/<name>.md and .html (self-contained) from the results.json files
    of `coldlabel train`; nothing is trained."""
    settings = settings_from(ctx)
    run_ids = [r.strip() for r in runs.split(",") if r.strip()]
    path = build_report(settings, dataset, run_ids, name)
    console.print(f"report: {path} (and {path.with_suffix('.html').name} beside it)")
