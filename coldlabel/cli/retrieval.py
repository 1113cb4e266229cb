"""``coldlabel retrieval …``: build the shared candidate space, query candidates, measure candidate recall."""
from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from coldlabel.cli.common import console, int_list, workspace
from coldlabel.config import Settings
from coldlabel.data.workspace import Workspace
from retrieval.build import build
from retrieval.index import CandidateIndex, candidate_recall

app = typer.Typer(no_args_is_help=True)


def build_with_progress(ws: Workspace, settings: Settings, force: bool = False) -> None:
    """``retrieval.build.build`` with progress bars and a one-line summary (also used by ``coldlabel demo``)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[note]}"), console=console) as bar:
        tasks: dict[str, int] = {}

        def hook(event: str, data: dict) -> None:
            if event == "stage_reused":
                console.print(f"  {data['stage']}: up to date, reused")
            elif event == "content_start":
                tasks["content"] = bar.add_task("encode items (MiniLM)", total=data["total"], note="")
                tasks["content_total"] = data["total"]
            elif event == "content_batch":
                bar.advance(tasks["content"], data["n"])
            elif event == "tt_start":
                tasks["tt"] = bar.add_task(f"two-tower ({data['rows']:,} rows)", total=data["total"], note="")
            elif event == "tt_epoch":
                bar.update(tasks["tt"], completed=data["epoch"], note=f"loss {data['loss']:.4f}")
            elif event == "stage_done" and data["stage"] == "content":
                # cached and duplicate texts are not encoded: show the stage as complete anyway
                bar.update(tasks["content"], completed=tasks["content_total"], note="(cache used)")

        results = build(ws, settings, force=force, hook=hook)
    facts = {r.stage: r.facts for r in results}
    tt, lv = facts["two_tower"], facts["leaves"]
    console.print(f"[green]{ws.name}: retrieval artefacts ready[/] in {ws.retrieval} · "
                  f"{tt['n_items']:,} items × {tt['dim']}d · final loss {tt['final_loss']:.4f} · "
                  f"{lv['n_leaves']:,} leaves (largest {lv['max_leaf']})")


@app.command("build")
def build_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Workspace name under data.root."),
    force: bool = typer.Option(False, "--force", help="Rebuild every stage (the encoder cache is still used)."),
) -> None:
    """MiniLM content vectors -> Two-Tower -> FAISS index -> leaves (cached per stage)."""
    ws, settings = workspace(ctx, dataset)
    build_with_progress(ws, settings, force=force)


@app.command("candidates")
def candidates_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d"),
    users: str = typer.Option(..., "--users", help="Comma-separated user indices, e.g. 0,1,2"),
    m: int | None = typer.Option(None, "--m", help="Candidates per user (default retrieval.candidates)."),
    show: int = typer.Option(10, "--show", help="Candidates printed per user."),
) -> None:
    """Top-M unseen Two-Tower candidates for some users."""
    ws, settings = workspace(ctx, dataset)
    user_idxs = int_list(users, "--users")
    m = m or settings.retrieval.candidates
    index = CandidateIndex.load(ws, settings)
    n_users = len(index.user_vectors)
    if any(u < 0 or u >= n_users for u in user_idxs):
        raise typer.BadParameter(f"--users: user indices run from 0 to {n_users - 1}")
    ids, scores = index.search(user_idxs, m)
    items = ws.items
    taxonomy = ws.taxonomy["item_subcategory"]
    cold = ws.cold_items
    for u, row_ids, row_scores in zip(user_idxs, ids, scores):
        found = int((row_ids >= 0).sum())
        table = Table(title=f"user {u}: {found} candidates (showing {min(show, found)})")
        for col in ("rank", "item", "score", "title", "subcategory", "cold"):
            table.add_column(col)
        for rank, (i, s) in enumerate(zip(row_ids[:show], row_scores[:show]), 1):
            if i < 0:
                break
            table.add_row(str(rank), str(i), f"{s:.3f}", items[i].title[:60], taxonomy[str(i)],
                          "yes" if i in cold else "")
        console.print(table)


@app.command("recall")
def recall_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d"),
    m: str = typer.Option("50,200,500,1000,2000", "--m", help="Comma-separated M values."),
) -> None:
    """Candidate recall@M (cold / warm) of the Two-Tower beside popularity and content-only baselines."""
    ws, settings = workspace(ctx, dataset)
    report = candidate_recall(ws, settings, int_list(m, "--m"))
    console.print(recall_table(report))
    console.print(f"written to {ws.retrieval / 'recall.json'}")


def recall_table(report: dict) -> Table:
    tp = report["test_positives"]
    table = Table(title=f"{report['dataset']}: candidate recall@M over {report['users']:,} users "
                        f"({tp['cold']:,} cold / {tp['warm']:,} warm test positives)")
    table.add_column("retriever")
    table.add_column("items")
    for m in report["ms"]:
        table.add_column(f"@{m}", justify="right")
    for name, res in report["retrievers"].items():
        for part in ("cold", "warm", "all"):
            table.add_row(name if part == "cold" else "", part,
                          *["–" if v is None else f"{v:.3f}" for v in res[part]])
    return table
