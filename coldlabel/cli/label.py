"""``coldlabel label start|status|resume|cancel|list|export``: labeling runs over many users.

A run is started here and then labeled inline (no broker: a thread pool in this process) or through the
Celery queue (``workers.broker_url`` set); ``label user`` and ``label report`` live in ``label_user.py``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import kombu.exceptions
import typer
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table

from coldlabel.cli import label_user
from coldlabel.cli.common import console, fmt_seconds, open_store, quiet_http_logs, settings_from, users_option
from coldlabel.config import Settings
from coldlabel.errors import RunDegraded, RunError
from coldlabel.store import Store
from labeler.lifecycle import run_settings
from labeler.local_server import local_endpoint
from labeler.runs import RunStatus, cancel_run, export_run, prepare_resume, run_status, start_run
from workers.inline import run_inline
from workers.tasks import enqueue

app = typer.Typer(no_args_is_help=True, add_completion=False)
app.command("user", help="Label one user in the foreground; print every stage.")(label_user.label_user_command)
app.command("report", help="Markdown + HTML report of a run, with plots.")(label_user.report_command)


def dispatch(settings: Settings, store: Store, run_id: str, users: list[int], inline: bool,
             wait: bool = False) -> None:
    """Send the users to the queue, or label them here when asked to or when there is no broker; with
    ``wait``, follow a queued run until it ends (``coldlabel run`` needs the labels before training)."""
    if not users:
        console.print(f"run [bold]{run_id}[/]: nothing to label (every user is done)")
        ended(store, run_id)
        return
    if inline or not settings.workers.broker_url:
        run_inline_with_progress(settings, store, run_id, users)
        return
    try:
        n = enqueue(settings, run_id, users)
    except kombu.exceptions.OperationalError as exc:  # the broker is down or the URL is wrong
        raise RunError(f"could not reach the broker {settings.workers.broker_url!r}: {exc}; nothing was "
                       f"enqueued, run `coldlabel label resume {run_id}` when it is back") from None
    console.print(f"run [bold]{run_id}[/]: enqueued {n} users on {settings.workers.broker_url}; "
                  f"watch with `coldlabel label status {run_id} --watch`")
    if wait:
        follow(store, run_id)


def run_inline_with_progress(settings: Settings, store: Store, run_id: str, users: list[int]) -> None:
    quiet_http_logs()
    run = store.get_run(run_id)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    tally = {"done": 0, "skipped": 0, "dead": 0, "paused": 0}
    with local_endpoint(run_settings(settings, run), run.endpoint), Progress(*columns, console=console) as bar:
        task = bar.add_task(f"run {run_id}", total=len(users), info="")

        def on_user(_user_idx: int, outcome: str) -> None:
            tally[outcome] += 1
            bar.update(task, advance=1, info=" · ".join(f"{k} {v}" for k, v in tally.items() if v))

        result = run_inline(settings, run_id, users, on_user)
    console.print(f"run [bold]{run_id}[/]: {result.done} labeled, {result.skipped} skipped, {result.dead} dead "
                  f"in {result.seconds:.1f}s")
    for user_idx, error in list(result.errors.items())[:5]:
        console.print(f"  user {user_idx}: {error}")
    ended(store, run_id)


def ended(store: Store, run_id: str) -> None:
    """How the run stands now, as the command's exit: done (0), degraded (3, a warning), else an error (1)."""
    run = store.get_run(run_id)
    if run.status in ("done", "active"):  # active: its users are left to others (workers, another process)
        return
    if run.status == "degraded":
        raise RunDegraded(f"run {run_id} ended degraded: {run.status_reason}")
    raise RunError(f"run {run_id} {run.status}" + (f": {run.status_reason}" if run.status_reason else ""))


# ---- commands -----------------------------------------------------------------------------------------

@app.command("start")
def start_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset workspace under data.root."),
    users: str = typer.Option("all", "--users", "-n", help="How many users (the first N), or 'all'."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", "-e", help="Endpoint name (default labeler.endpoint)."),
    inline: bool = typer.Option(False, "--inline", help="Label here, without a broker (automatic if none is set)."),
    name: str = typer.Option("", "--name", help="A name to recognise the run by."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting for this run: section.key=value "
                                                     "(repeatable; also accepted before `label`)."),
) -> None:
    """Create a run and enqueue one task per user (or label them here with --inline)."""
    settings = settings_from(ctx, set_)
    limit = users_option(users)
    store = open_store(settings)
    run = start_run(store, settings, dataset, users=limit, endpoint=endpoint, name=name)
    todo = store.incomplete_users(run.id)
    console.print(f"run [bold]{run.id}[/] created: dataset {dataset}, {len(todo)} users, endpoint {run.endpoint} "
                  f"({run.model}), prompt {run.prompt_version}")
    dispatch(settings, store, run.id, todo, inline)


def render_status(status: RunStatus) -> Group:
    run, p = status.run, status.progress
    c = status.counts
    head = (f"run [bold]{run.id}[/] {run.name and '(' + run.name + ') '}· dataset {run.dataset} · endpoint "
            f"{run.endpoint} ({run.model}) · [bold]{run.status}[/]")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(p.total, 1), completed=c["done"], width=50),
                f"{c['done']}/{p.total} done")
    rate = status.fallback_rate
    table = Table.grid(padding=(0, 2))
    eta = fmt_seconds(p.eta_s) if run.status == "active" else "-"
    table.add_row("done", str(c["done"]), "users/min", f"{p.users_per_min:.1f}" if p.users_per_min else "-")
    table.add_row("in flight", str(c["running"]), "tokens/s", f"{status.tokens_per_s:.0f}" if status.tokens_per_s else "-")
    table.add_row("stalled", str(p.stalled), "ETA", eta)
    table.add_row("pending", str(c["pending"]), "fallback rate", (f"{rate:.1%}" if rate is not None else "-")
                  + f" (max {status.max_fallback_share:.0%})")
    table.add_row("failed", str(c["failed"]), "LLM calls / cached", f"{p.totals.llm_calls} / {p.totals.cache_hits}")
    table.add_row("dead", str(c["dead"]), "", "")
    parts = [head, bar, table]
    if run.status_reason:
        parts.append(f"[{'red' if run.status in ('paused', 'failed') else 'yellow'}]{run.status}:[/] {run.status_reason}")
    for warning in status.warnings:
        parts.append(f"[yellow]warning:[/] {warning}")
    if run.endpoint_switches:
        parts.append("endpoint switches: " + "; ".join(f"{s['from_endpoint']} -> {s['endpoint']} at {s['at']}"
                                                         for s in run.endpoint_switches))
    for user_idx, state, error in status.errors:
        parts.append(f"[red]user {user_idx} {state}:[/] {(error or '')[:300]}")
    return Group(*parts)


@app.command("status")
def status_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until the run ends; exit 0 done, 3 degraded, "
                                                          "1 paused/failed/cancelled."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON (for scripts)."),
) -> None:
    """Progress of a run: done / failed / dead / in flight, users per minute, tokens per second, ETA."""
    settings = settings_from(ctx)
    store = open_store(settings)
    status = run_status(store, run_id)
    if as_json:
        p = status.progress
        print(json.dumps({"run": run_id, "status": status.run.status, "reason": status.run.status_reason,
                          "endpoint": status.run.endpoint, **status.counts, "stalled": p.stalled,
                          "users_per_min": p.users_per_min, "tokens_per_s": status.tokens_per_s, "eta_s": p.eta_s,
                          "fallback_rate": status.fallback_rate, "max_fallback_share": status.max_fallback_share,
                          "warnings": status.warnings}))
        return
    if not watch:
        console.print(render_status(status))
        return
    try:
        follow(store, run_id, interval)
    except KeyboardInterrupt:  # stops watching; the run goes on
        return


def follow(store: Store, run_id: str, interval: float = 2.0) -> None:
    """Refresh the run's status until it ends, then exit as :func:`ended` says."""
    status = run_status(store, run_id)
    with Live(render_status(status), console=console, refresh_per_second=4) as live:
        while status.progress.remaining > 0 and status.run.status == "active":
            time.sleep(interval)
            status = run_status(store, run_id)
            live.update(render_status(status))
    ended(store, run_id)


@app.command("resume")
def resume_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", "-e", help="Finish the run on another endpoint."),
    inline: bool = typer.Option(False, "--inline", help="Label here, without a broker."),
    skip_dead: bool = typer.Option(False, "--skip-dead", help="Leave dead-lettered users alone."),
) -> None:
    """Re-enqueue only the users that are not done (failed and dead ones too, unless --skip-dead)."""
    settings = settings_from(ctx)
    store = open_store(settings)
    enq = prepare_resume(store, settings, run_id, endpoint=endpoint, retry_dead=not skip_dead)
    run = store.get_run(run_id)
    console.print(f"run [bold]{run_id}[/]: {len(enq.users)} users to finish on endpoint {run.endpoint} "
                  f"({len(enq.in_flight)} were left in flight)")
    dispatch(settings, store, run_id, enq.users, inline)


@app.command("cancel")
def cancel_command(ctx: typer.Context, run_id: str = typer.Argument(..., help="Run id.")) -> None:
    """Stop a run: its queued tasks return without LLM calls. `label resume` starts it again."""
    store = open_store(settings_from(ctx))
    cancel_run(store, run_id)
    console.print(f"run [bold]{run_id}[/] cancelled (users in flight finish; queued ones are skipped)")


@app.command("list")
def list_command(ctx: typer.Context, dataset: Optional[str] = typer.Option(None, "--dataset", "-d")) -> None:
    """The runs in the store, newest first."""
    store = open_store(settings_from(ctx))
    table = Table("run", "name", "dataset", "endpoint", "model", "status", "done", "users", "created")
    for run in store.list_runs(dataset=dataset):
        p = store.run_progress(run.id)
        table.add_row(run.id, run.name, run.dataset, run.endpoint, run.model, run.status, str(p.done), str(p.total),
                      run.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@app.command("export")
def export_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for edges.tsv, triplets.tsv and run.json."),
) -> None:
    """Write the run's pseudo edges and triplets as TSV (user, item ids + idx, weight, from_fallback)."""
    store = open_store(settings_from(ctx))
    counts = export_run(store, run_id, out)
    progress = store.run_progress(run_id)
    note = "" if progress.remaining + progress.by_status["dead"] == 0 else \
        f" [yellow](run not complete: {progress.done}/{progress.total} users done)[/]"
    console.print(f"wrote {counts['edges']} edges and {counts['triplets']} triplets to {out}{note}")
