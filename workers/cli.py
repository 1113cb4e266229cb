"""``coldlabel label start|status|resume|cancel|export``, ``coldlabel llm serve|check`` and ``coldlabel worker``.

Celery, the store and the pipeline are imported inside the commands so ``coldlabel --help`` stays instant.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table

from coldlabel.cli import settings_from
from coldlabel.config import ConfigError, Settings

console = Console()
label_app = typer.Typer(no_args_is_help=True, add_completion=False)
llm_app = typer.Typer(no_args_is_help=True, add_completion=False)


def _quiet_http_logs() -> None:
    """One INFO line per LLM request drowns the progress bar and the worker log; keep warnings."""
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def _open_store(settings: Settings):
    from labeler.store import Store, StoreError

    try:
        return Store(settings.store_url())
    except StoreError as exc:
        _fail(str(exc))
    except Exception as exc:  # driver errors: server down, bad credentials (the URL is shown redacted)
        from labeler.store import redact

        _fail(f"cannot open the store {redact(settings.store_url())}: {type(exc).__name__}: {exc}")


@contextmanager
def _clear_errors():
    """Problems the user can fix become one red line and exit code 1 (config errors keep their exit 2)."""
    from labeler.store import StoreError
    from retrieval.workspace import WorkspaceError
    from workers.runs import RunError

    try:
        yield
    except ConfigError:
        raise
    except (StoreError, WorkspaceError, RunError, ValueError) as exc:
        _fail(str(exc))


def _users_option(users: str) -> int | None:
    if users == "all":
        return None
    if not users.isdigit() or int(users) < 1:
        raise typer.BadParameter(f"--users must be a positive number or 'all', got {users!r}")
    return int(users)


def _dispatch(settings: Settings, store, run_id: str, users: list[int], takeover: list[int], inline: bool) -> None:
    """Send the users to the queue, or label them here when asked to or when there is no broker."""
    if not users:
        console.print(f"run [bold]{run_id}[/]: nothing to label (every user is done)")
        return
    if inline or not settings.workers.broker_url:
        run_inline_with_progress(settings, store, run_id, users)
        return
    from workers.runs import enqueue

    try:
        n = enqueue(settings, run_id, users, takeover)
    except Exception as exc:  # kombu OperationalError and friends: the broker is down or the URL is wrong
        _fail(f"could not reach the broker {settings.workers.broker_url!r}: {exc}; nothing was enqueued, "
              f"run `coldlabel label resume {run_id}` when it is back")
    console.print(f"run [bold]{run_id}[/]: enqueued {n} users on {settings.workers.broker_url}; "
                  f"watch with `coldlabel label status {run_id} --watch`")


def run_inline_with_progress(settings: Settings, store, run_id: str, users: list[int]) -> None:
    from labeler.cli import local_endpoint
    from workers.inline import run_inline
    from workers.tasks import run_settings

    _quiet_http_logs()
    run = store.get_run(run_id)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    tally = {"done": 0, "skipped": 0, "dead": 0}
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
    if result.dead:
        raise typer.Exit(1)


# ---- label ----------------------------------------------------------------------------------------

@label_app.command("start")
def start_command(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset workspace under data.root."),
    users: str = typer.Option("all", "--users", "-n", help="How many users (the first N), or 'all'."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", "-e", help="Endpoint name (default labeler.endpoint)."),
    inline: bool = typer.Option(False, "--inline", help="Label here, without a broker (automatic if none is set)."),
    name: str = typer.Option("", "--name", help="A name to recognise the run by."),
) -> None:
    """Create a run and enqueue one task per user (or label them here with --inline)."""
    from workers.runs import start_run

    settings = settings_from(ctx)
    limit = _users_option(users)
    store = _open_store(settings)
    with _clear_errors():
        run = start_run(store, settings, dataset, users=limit, endpoint=endpoint, name=name)
    todo = store.incomplete_users(run.id)
    console.print(f"run [bold]{run.id}[/] created: dataset {dataset}, {len(todo)} users, endpoint {run.endpoint} "
                  f"({run.model}), prompt {run.prompt_version}")
    _dispatch(settings, store, run.id, todo, [], inline)


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def render_status(status) -> Group:
    run, p = status.run, status.progress
    c = status.counts
    head = (f"run [bold]{run.id}[/] {run.name and '(' + run.name + ') '}· dataset {run.dataset} · endpoint "
            f"{run.endpoint} ({run.model}) · [bold]{run.status}[/]")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(p.total, 1), completed=c["done"], width=50),
                f"{c['done']}/{p.total} done")
    rate = status.fallback_rate
    table = Table.grid(padding=(0, 2))
    table.add_row("done", str(c["done"]), "users/min", f"{p.users_per_min:.1f}" if p.users_per_min else "-")
    table.add_row("in flight", str(c["running"]), "tokens/s", f"{status.tokens_per_s:.0f}" if status.tokens_per_s else "-")
    table.add_row("pending", str(c["pending"]), "ETA", _fmt_s(p.eta_s))
    table.add_row("failed", str(c["failed"]), "fallback rate", f"{rate:.1%}" if rate is not None else "-")
    table.add_row("dead", str(c["dead"]), "LLM calls / cached", f"{p.totals.llm_calls} / {p.totals.cache_hits}")
    parts = [head, bar, table]
    if run.endpoint_switches:
        parts.append("endpoint switches: " + "; ".join(f"{s['from_endpoint']} -> {s['endpoint']} at {s['at']}"
                                                         for s in run.endpoint_switches))
    for user_idx, state, error in status.errors:
        parts.append(f"[red]user {user_idx} {state}:[/] {(error or '')[:300]}")
    return Group(*parts)


@label_app.command("status")
def status_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until nothing is pending or in flight."),
    interval: float = typer.Option(2.0, "--interval", help="Seconds between refreshes with --watch."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON (for scripts)."),
) -> None:
    """Progress of a run: done / failed / dead / in flight, users per minute, tokens per second, ETA."""
    from workers.runs import run_status

    settings = settings_from(ctx)
    store = _open_store(settings)
    with _clear_errors():
        status = run_status(store, run_id)
    if as_json:
        p = status.progress
        print(json.dumps({"run": run_id, "status": status.run.status, "endpoint": status.run.endpoint,
                          **status.counts, "users_per_min": p.users_per_min, "tokens_per_s": status.tokens_per_s,
                          "eta_s": p.eta_s, "fallback_rate": status.fallback_rate}))
        return
    if not watch:
        console.print(render_status(status))
        return
    with Live(render_status(status), console=console, refresh_per_second=4) as live:
        try:
            while status.counts["pending"] + status.counts["running"] > 0 and status.run.status == "active":
                time.sleep(interval)
                status = run_status(store, run_id)
                live.update(render_status(status))
        except KeyboardInterrupt:
            pass


@label_app.command("resume")
def resume_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", "-e", help="Finish the run on another endpoint."),
    inline: bool = typer.Option(False, "--inline", help="Label here, without a broker."),
    skip_dead: bool = typer.Option(False, "--skip-dead", help="Leave dead-lettered users alone."),
) -> None:
    """Re-enqueue only the users that are not done (failed and dead ones too, unless --skip-dead)."""
    from workers.runs import prepare_resume

    settings = settings_from(ctx)
    store = _open_store(settings)
    with _clear_errors():
        enq = prepare_resume(store, settings, run_id, endpoint=endpoint, retry_dead=not skip_dead)
    run = store.get_run(run_id)
    console.print(f"run [bold]{run_id}[/]: {len(enq.users)} users to finish on endpoint {run.endpoint} "
                  f"({len(enq.takeover)} were left in flight)")
    _dispatch(settings, store, run_id, enq.users, enq.takeover, inline)


@label_app.command("cancel")
def cancel_command(ctx: typer.Context, run_id: str = typer.Argument(..., help="Run id.")) -> None:
    """Stop a run: its queued tasks return without LLM calls. `label resume` starts it again."""
    from workers.runs import cancel_run

    store = _open_store(settings_from(ctx))
    with _clear_errors():
        cancel_run(store, run_id)
    console.print(f"run [bold]{run_id}[/] cancelled (users in flight finish; queued ones are skipped)")


@label_app.command("list")
def list_command(ctx: typer.Context, dataset: Optional[str] = typer.Option(None, "--dataset", "-d")) -> None:
    """The runs in the store, newest first."""
    store = _open_store(settings_from(ctx))
    table = Table("run", "name", "dataset", "endpoint", "model", "status", "done", "users", "created")
    for run in store.list_runs(dataset=dataset):
        p = store.run_progress(run.id)
        table.add_row(run.id, run.name, run.dataset, run.endpoint, run.model, run.status, str(p.done), str(p.total),
                      run.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@label_app.command("export")
def export_command(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run id."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for edges.tsv, triplets.tsv and run.json."),
) -> None:
    """Write the run's pseudo edges and triplets as TSV (user, item ids + idx, weight, from_fallback)."""
    from workers.runs import export_run

    store = _open_store(settings_from(ctx))
    with _clear_errors():
        counts = export_run(store, run_id, out)
    progress = store.run_progress(run_id)
    note = "" if progress.remaining + progress.by_status["dead"] == 0 else \
        f" [yellow](run not complete: {progress.done}/{progress.total} users done)[/]"
    console.print(f"wrote {counts['edges']} edges and {counts['triplets']} triplets to {out}{note}")


# ---- llm ------------------------------------------------------------------------------------------

@llm_app.command("serve")
def serve_command(
    ctx: typer.Context,
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8765 for llama.cpp, the vllm "
                                                             "endpoint's port with --vllm)."),
    vllm: bool = typer.Option(False, "--vllm", help="Run `vllm serve` with endpoints.vllm.model instead."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", "-e", help="Endpoint whose model to serve."),
) -> None:
    """Start an LLM server in the foreground: the packaged SmolLM2 on llama.cpp, or vLLM."""
    from urllib.parse import urlparse

    settings = settings_from(ctx)
    if vllm:
        import importlib.util

        ep = settings.endpoint(endpoint or "vllm")
        if importlib.util.find_spec("vllm") is None or shutil.which("vllm") is None:
            _fail("vllm is not installed here (`pip install -e .[vllm]` on a GPU host, or use the compose file)")
        cmd = ["vllm", "serve", ep.model, "--port", str(port or urlparse(ep.base_url).port or 8000),
               "--enable-prefix-caching"]
        console.print("running: " + " ".join(cmd))
        os.execvp(cmd[0], cmd)
    from labeler.local_server import LocalServerError, start_local_server

    ep = settings.endpoint(endpoint or "local")
    port = port or urlparse(ep.base_url).port or 8765
    log_path = Path(settings.data.root) / "llm-server.log"
    try:
        server = start_local_server(port, ep.model, log_path)
    except LocalServerError as exc:
        _fail(str(exc))
    if server.reused:
        console.print(f"an LLM server already serves {ep.model} at {server.base_url}; leaving it running")
        return
    console.print(f"serving {ep.model} at {server.base_url} (log: {log_path}); Ctrl-C stops it")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


CHECK_CHOICES = ["red", "green", "blue"]
CHECK_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["colours"],
                "properties": {"colours": {"type": "array", "minItems": 1, "maxItems": 1,
                                           "items": {"type": "string", "enum": CHECK_CHOICES}}}}


def check_endpoint(settings: Settings, name: str) -> tuple[bool, list[str]]:
    """Reachability, model name, structured output. Returns (ok, verdict lines); never raises on
    endpoint trouble."""
    import asyncio

    import httpx

    from labeler.client import EndpointError, LLMClient

    ep = settings.endpoint(name)
    where = f"endpoint {name!r} at {ep.base_url}"
    lines: list[str] = []
    headers = {"Authorization": f"Bearer {ep.api_key()}"}
    try:
        resp = httpx.get(ep.base_url.rstrip("/") + "/models", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return False, [f"UNREACHABLE: {where}: {type(exc).__name__}: {exc}"]
    if resp.status_code != 200:
        return False, [f"UNREACHABLE: {where}: GET /models answered HTTP {resp.status_code} {resp.text[:200]}"]
    try:
        served = [m["id"] for m in resp.json().get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False, [f"NOT OPENAI-COMPATIBLE: {where}: GET /models did not return a model list"]
    lines.append(f"reachable: {where}")
    if ep.model not in served:
        return False, lines + [f"MODEL MISSING: {ep.model!r} is not served (served: {', '.join(served) or 'none'})"]
    lines.append(f"model: {ep.model} is served")
    quick = settings.model_copy(deep=True)
    quick.transport.max_attempts = 2
    messages = [{"role": "system", "content": "You answer with JSON only."},
                {"role": "user", "content": "Pick the colour of a clear daytime sky.\nAllowed:\n"
                 + "\n".join(f"- {c}" for c in CHECK_CHOICES) + '\nAnswer format: {"colours": ["<colour>"]}'}]

    async def ask():
        async with LLMClient.from_settings(quick, name) as client:
            return await client.complete(messages, schema=CHECK_SCHEMA, schema_name="check", constrained=True,
                                         max_tokens=48, use_cache=False)

    try:
        completion = asyncio.run(ask())
    except EndpointError as exc:
        return False, lines + [f"STRUCTURED OUTPUT FAILED: {exc}"]
    try:
        answer = json.loads(completion.text)
        values = answer["colours"]
        valid = isinstance(values, list) and values and all(v in CHECK_CHOICES for v in values)
    except (ValueError, KeyError, TypeError):
        valid = False
    how = "no schema sent (dialect plain)" if ep.dialect == "plain" else f"schema sent as the {ep.dialect} dialect"
    if not valid:
        return False, lines + [f"STRUCTURED OUTPUT FAILED ({how}): answer {completion.text[:200]!r} is not JSON "
                               f"inside the allowed set {CHECK_CHOICES}"]
    return True, lines + [f"structured output: valid JSON inside the allowed set ({how}), "
                          f"{completion.latency_ms:.0f} ms", "OK"]


@llm_app.command("check")
def check_command(ctx: typer.Context, name: str = typer.Argument(..., help="Endpoint name under [endpoints].")) -> None:
    """Verify an endpoint: reachable, serves the configured model, answers with schema-valid JSON."""
    ok, lines = check_endpoint(settings_from(ctx), name)
    for line in lines[:-1]:
        console.print(line, highlight=False)
    console.print(lines[-1], style="bold green" if ok else "bold red", highlight=False)
    if not ok:
        raise typer.Exit(1)


# ---- worker ---------------------------------------------------------------------------------------

def worker_command(
    ctx: typer.Context,
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", help="Users in flight (default "
                                                                                 "workers.concurrency)."),
    pool: Optional[str] = typer.Option(None, "--pool", "-P", help="threads (default), prefork, solo, gevent."),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
    hostname: Optional[str] = typer.Option(None, "--hostname", "-n", help="Worker name (default celery@host)."),
    events: bool = typer.Option(False, "--events", "-E", help="Send task events (for Flower)."),
) -> None:
    """Start a Celery worker on workers.broker_url that labels users from the queue."""
    from workers.app import QUEUE, configure

    settings = settings_from(ctx)
    if not settings.workers.broker_url:
        _fail("workers.broker_url is empty: set it (COLDLABEL_WORKERS__BROKER_URL=redis://host:6379/0)", 2)
    app = configure(settings)
    _quiet_http_logs()
    argv = ["worker", f"--pool={pool or settings.workers.pool}",
            f"--concurrency={concurrency or settings.workers.concurrency}", f"--loglevel={loglevel}",
            f"--queues={QUEUE}", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if events:
        argv.append("--task-events")
    app.worker_main(argv)
