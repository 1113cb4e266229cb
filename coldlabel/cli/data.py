"""``coldlabel data …``: synthesize, fetch, prepare, and show statistics of a dataset workspace."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from coldlabel.cli.common import console, settings_from, workspace
from coldlabel.data import synth
from coldlabel.data.fetch import fetch
from coldlabel.data.prepare import adopt_raw, prepare
from coldlabel.data.recbole import export_recbole
from coldlabel.data.stats import THESIS_TABLES
from coldlabel.data.workspace import Workspace

app = typer.Typer(no_args_is_help=True)


@app.command("synth")
def synth_command(
    ctx: typer.Context,
    dataset: str = typer.Option(None, "--dataset", "-d", help="Workspace name (default: the preset name)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="tiny | small | beauty | health"),
    seed: Optional[int] = typer.Option(None, "--seed"),
) -> None:
    """Write a synthetic benchmark in the Amazon 2014 raw format (plus a separate truth file)."""
    settings = settings_from(ctx)
    preset = preset or settings.synth.preset
    seed = settings.synth.seed if seed is None else seed
    ws = Workspace.of(settings.data.root, dataset or preset)
    summary = synth.generate(preset, ws.root, seed=seed, progress=preset in ("beauty", "health"))
    console.print(f"[green]synthesized[/] preset={preset} seed={seed} -> {ws.raw.absolute()}  ({summary})")


@app.command("fetch")
def fetch_command(
    ctx: typer.Context,
    category: str = typer.Argument(..., help="Amazon category, e.g. Beauty or Health_and_Personal_Care"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Workspace name (default: category, lower case)."),
    edition: str = typer.Option("2014", "--edition", help="2014 or 2018"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Mirror to download from."),
) -> None:
    """Download the public review + metadata dumps of one category (needs internet)."""
    ws, _ = workspace(ctx, dataset or category.lower())
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, got: int, total: int | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=got)

        paths = fetch(category, ws.raw, edition=edition, base_url=base_url, progress=progress)
    console.print(f"[green]ready:[/] {', '.join(str(p.absolute()) for p in paths)}")


@app.command("prepare")
def prepare_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Workspace name under data.root."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if inputs are unchanged."),
    raw: Optional[Path] = typer.Option(None, "--raw", help="Directory holding your reviews + meta files; they are "
                                                           "linked into the workspace's raw/ (see README: your own data)."),
    edition: Optional[str] = typer.Option(None, "--edition", help="2014 | 2018 | auto (default data.edition: told "
                                                                  "by the file names)."),
) -> None:
    """Raw files -> split, weighted, indexed interactions, item texts, taxonomy and statistics."""
    ws, settings = workspace(ctx, dataset)
    if edition is not None:
        settings = settings_from(ctx, [f"data.edition={edition}"])
    console.print(f"workspace: {ws.root.absolute()}", highlight=False)
    if raw is not None:
        files = adopt_raw(ws, raw, settings.data.edition)
        console.print(f"raw files: {files.reviews.name} + {files.meta.name} ({files.edition} edition) from "
                      f"{raw.absolute()}", highlight=False)
    result = prepare(ws, settings.data, force=force)
    if not result.rebuilt:
        console.print(f"[green]{dataset}: up to date[/] (inputs and settings unchanged)")
        return
    note = f", [yellow]{result.malformed} malformed lines skipped[/] (see {ws.processed / 'report.json'})" \
        if result.malformed else ""
    console.print(f"[green]{dataset}: prepared in {result.seconds:.1f}s[/]{note}")
    print_stats(ws, compare=None)


def print_stats(ws: Workspace, compare: Optional[str]) -> None:
    stats = ws.stats
    table = Table(title=f"{ws.name}: data processing statistics ({stats.get('edition')} format)")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    reference = THESIS_TABLES.get(compare or "")
    if reference:
        table.add_column(f"Thesis ({compare})", justify="right")
        table.add_column("Δ", justify="right")
    for i, (row, value) in enumerate(stats["table"].items()):
        shown = f"{value:.2f}%" if "ratio" in row else f"{value:,}"
        cells = [row, shown]
        if reference:
            ref = reference[i]
            cells += [f"{ref:.2f}%" if "ratio" in row else f"{ref:,}", f"{100 * (value - ref) / ref:+.1f}%"]
        table.add_row(*cells)
    console.print(table)
    console.print(" · ".join(f"{k}: {v}" for k, v in stats["extra"].items()))
    if "dropped" in stats:  # absent in workspaces prepared before it was recorded
        console.print("dropped: " + " · ".join(f"{k}: {v:,}" for k, v in stats["dropped"].items())
                      + "  (why: README, 'Your own data')", highlight=False)
        flagged = stats.get("flagged_items", 0)
        style = "yellow" if flagged else "green"
        console.print(f"[{style}]{flagged} items flagged as instruction-like text[/] (labels follow "
                      f"labeler.flagged_items; list: {(ws.processed / 'report.json').absolute()})", highlight=False)


@app.command("stats")
def stats_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d"),
    compare: Optional[str] = typer.Option(None, "--compare", help="Show thesis figures beside ours: beauty | health"),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics file as JSON."),
) -> None:
    """Print the Table 3.1-style statistics of a prepared dataset, and what preparation dropped."""
    ws, _ = workspace(ctx, dataset)
    if as_json:
        print(json.dumps(ws.stats, indent=2))
    else:
        console.print(f"workspace: {ws.root.absolute()}", highlight=False)
        print_stats(ws, compare)


@app.command("export-recbole")
def export_recbole_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Workspace name under data.root."),
    out: Optional[Path] = typer.Option(None, "--out", help="RecBole data_path (default: <workspace>/recbole); "
                                                           "files go to <out>/<dataset>/."),
) -> None:
    """Write RecBole atomic files of the prepared split (benchmark files for general and sequential models)."""
    ws, settings = workspace(ctx, dataset)
    result = export_recbole(ws, out or ws.root / "recbole", max_len=settings.trainer.max_len)
    for name, n in result.rows.items():
        console.print(f"  {name}: {n:,} rows", highlight=False)
    console.print(f"[green]exported[/] {result.directory.absolute()} (RecBole settings: general.yaml, "
                  f"sequential.yaml there)", highlight=False)
