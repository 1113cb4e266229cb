"""``coldlabel label user`` (one user in the foreground, every stage's answer shown) and ``label report``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from coldlabel.cli.common import console, open_store, settings_from
from coldlabel.data.workspace import Workspace
from coldlabel.errors import ColdlabelError, RunError, RunNotFound
from labeler.lifecycle import AttemptFailed, process_user, replay_user, worker_name
from labeler.local_server import local_endpoint
from labeler.pipeline import UserOutcome
from labeler.report import write_report
from labeler.runs import add_users, prepare_resume, start_run


def _user_idx(ws: Workspace, who: str) -> int:
    mapping = ws.mappings["user2idx"]
    if who in mapping:
        return mapping[who]
    if who.isdigit() and int(who) < len(mapping):
        return int(who)
    raise typer.BadParameter(f"no user {who!r} (give a reviewerID or a user index)")


def label_user_command(
    ctx: typer.Context,
    user: str = typer.Argument(..., help="reviewerID or user index"),
    dataset: str = typer.Option(..., "--dataset", "-d"),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", "-e", help="Endpoint name (default labeler.endpoint)."),
    run: str = typer.Option("interactive", "--run", help="Run id to store the stages and labels under."),
) -> None:
    """Run the five stages for one user and print each answer, what was filtered, and the labels.

    The user is labeled inside run ``--run`` through the same claim → label → finish path as any worker;
    a user labeled before is shown again from the stored stages, without new calls."""
    settings = settings_from(ctx)
    name = endpoint or settings.labeler.endpoint
    ws = Workspace.of(settings.data.root, dataset)
    idx = _user_idx(ws, user)
    store = open_store(settings)
    try:
        existing = store.get_run(run)
    except RunNotFound:
        existing = start_run(store, settings, dataset, only=[idx], endpoint=name, name=run, run_id=run)
    else:
        if existing.dataset != dataset:
            raise typer.BadParameter(f"run {run!r} labels dataset {existing.dataset!r}, not {dataset!r}")
        add_users(store, settings, run, [idx])
        prepare_resume(store, settings, run, endpoint=name if name != existing.endpoint else None)
    if store.get_user(run, idx).status == "done":  # shown again from its stored stages, without new calls
        outcome = replay_user(settings, run, idx)
    else:
        with local_endpoint(settings, name):
            try:
                result = process_user(settings, run, idx, worker=worker_name("label-user"), takeover=True,
                                      final_attempt=True)
            except AttemptFailed as failure:  # recorded in the run; show what went wrong as one line
                if isinstance(failure.cause, ColdlabelError):
                    raise failure.cause from None
                raise
        if result.outcome is None:
            paused = store.get_run(run)
            raise RunError(f"user {user} was not labeled: run {run} is {paused.status}"
                           + (f": {paused.status_reason}" if paused.status_reason else ""))
        outcome = result.outcome
    show_outcome(outcome)


def show_outcome(outcome: UserOutcome) -> None:
    table = Table(title=f"user {outcome.user_id} (#{outcome.user_idx})")
    for col in ("stage", "part", "answer", "invalid", "how"):
        table.add_column(col, overflow="fold")
    for r in outcome.stages:
        answer = r.values if r.stage != "profile" else (r.profile or {}).get("profile", "")
        if r.scores:
            answer = [f"{v}:{r.scores.get(v, 0):g}" for v in r.values]
        how = ("resumed" if r.resumed else f"{r.calls} call(s)") + ("  [yellow]FALLBACK[/]" if r.fallback else "")
        table.add_row(r.stage, r.part.split(" > ")[-1] if r.part else "", str(answer), str(r.invalid),
                      f"{how}  {r.reason}")
    console.print(table)
    edges = Table(title="pseudo edges (u, i, w)")
    for col in ("item", "score", "weight", "subcategory", "fallback"):
        edges.add_column(col)
    for e in outcome.edges:
        edges.add_row(e.item_id, f"{e.score:g}", f"{e.weight:.2f}", e.subcategory.split(" > ")[-1], str(e.from_fallback))
    console.print(edges)
    trip = Table(title="triplets (u, pos, neg, w)")
    for col in ("pos", "neg", "weight", "fallback"):
        trip.add_column(col)
    for t in outcome.triplets:
        trip.add_row(t.pos_id, t.neg_id, f"{t.weight:.2f}", str(t.from_fallback))
    console.print(trip)
    c = outcome.counters
    console.print(f"calls: {c.llm_calls} new, {c.cache_hits} cached · tokens {c.prompt_tokens}+{c.completion_tokens}"
                  f" · fallbacks {c.fallbacks} · invalid ids dropped {c.invalid_ids}")


def report_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory (default <data.root>/<dataset>/reports/<run>)."),
) -> None:
    """Write a Markdown + HTML report of a run, with plots."""
    settings = settings_from(ctx)
    store = open_store(settings)
    run = store.get_run(run_id)
    out = out or Path(settings.data.root) / run.dataset / "reports" / run_id
    path = write_report(store, run_id, settings, out)
    console.print(f"report: {path} (and report.html beside it)")
