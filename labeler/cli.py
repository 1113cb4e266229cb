"""``coldlabel label user``: label one user in the foreground and show every stage's answer."""
from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.table import Table

from coldlabel.cli import settings_from
from coldlabel.config import Settings

console = Console()


@contextlib.contextmanager
def local_endpoint(settings: Settings, endpoint: str | None = None) -> Iterator[None]:
    """Start the packaged llama.cpp server when the endpoint is the embedded local one and nobody serves it.

    Other endpoints (vLLM, hosted, a local server someone already runs) are left as they are.
    """
    from labeler.local_server import start_local_server

    ep = settings.endpoint(endpoint)
    url = urlparse(ep.base_url)
    if ep.dialect != "llamacpp" or url.hostname not in ("127.0.0.1", "localhost"):
        yield
        return
    log_path = Path(settings.data.root) / "llm-server.log"
    server = start_local_server(url.port or 80, ep.model, log_path)
    try:
        yield
    finally:
        server.stop()


def _user_idx(space, who: str) -> int:
    mapping = space.ws.mappings["user2idx"]
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
    """Run the five stages for one user and print each answer, what was filtered, and the labels."""
    from labeler import pipeline, prompts
    from labeler.client import EndpointError
    from labeler.store import RunNotFound, Store

    settings = settings_from(ctx)
    name = endpoint or settings.labeler.endpoint
    ep = settings.endpoint(name)
    store = Store(settings.store_url())
    space = pipeline.load_space(settings, dataset)
    idx = _user_idx(space, user)
    try:
        store.get_run(run)
    except RunNotFound:
        store.create_run(run_id=run, name=run, dataset=dataset, endpoint=name, model=ep.model,
                         prompt_version=prompts.version_tag(settings.labeler.prompt_version),
                         config=settings.model_dump(exclude={"endpoints"}))
    store.add_users(run, [(idx, space.user_ids[idx])])

    async def go():
        ctx_ = pipeline.open_context(settings, dataset, name, store=store)
        async with ctx_.client:
            return await pipeline.label_user(ctx_, run, idx)

    try:
        with local_endpoint(settings, name):
            outcome = asyncio.run(go())
    except EndpointError as exc:
        console.print(f"[red]endpoint error:[/] {exc}")
        raise typer.Exit(1)
    store.finish_user(run, idx, outcome.counters)
    show_outcome(outcome)


def show_outcome(outcome) -> None:
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
    from labeler.report import write_report
    from labeler.store import RunNotFound, Store

    settings = settings_from(ctx)
    store = Store(settings.store_url())
    try:
        run = store.get_run(run_id)
    except RunNotFound as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1)
    out = out or Path(settings.data.root) / run.dataset / "reports" / run_id
    path = write_report(store, run_id, settings, out)
    console.print(f"report: {path} (and report.html beside it)")
