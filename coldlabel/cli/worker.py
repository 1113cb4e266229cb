"""``coldlabel worker``: a Celery worker that labels users from the queue (``workers/app.py`` says why each
Celery setting is what it is)."""
from __future__ import annotations

from typing import Optional

import typer

from coldlabel.cli.common import console, quiet_http_logs, settings_from
from coldlabel.errors import ConfigError
from workers.app import QUEUE, configure
from workers.readiness import wait_until_ready

app = typer.Typer(add_completion=False)


@app.command(help="Start a Celery worker that labels users from the queue.")
def worker_command(
    ctx: typer.Context,
    concurrency: Optional[int] = typer.Option(None, "--concurrency", "-c", help="Users in flight (default "
                                                                                 "workers.concurrency)."),
    pool: Optional[str] = typer.Option(None, "--pool", "-P", help="threads (default), prefork, solo, gevent."),
    loglevel: str = typer.Option("INFO", "--loglevel", "-l"),
    hostname: Optional[str] = typer.Option(None, "--hostname", "-n", help="Worker name (default celery@host)."),
    events: bool = typer.Option(False, "--events", "-E", help="Send task events (for Flower)."),
) -> None:
    """Start a Celery worker on workers.broker_url that labels users from the queue, once the store, the
    broker and the endpoint answer (else exit 1 with the reason, after workers.startup_timeout_s)."""
    settings = settings_from(ctx)
    if not settings.workers.broker_url:
        raise ConfigError("workers.broker_url is empty: set it (COLDLABEL_WORKERS__BROKER_URL=redis://host:6379/0)")
    wait_until_ready(settings)
    console.print("store, broker and endpoint answer; starting the worker")
    app = configure(settings)
    quiet_http_logs()
    argv = ["worker", f"--pool={pool or settings.workers.pool}",
            f"--concurrency={concurrency or settings.workers.concurrency}", f"--loglevel={loglevel}",
            f"--queues={QUEUE}", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if events:
        argv.append("--task-events")
    app.worker_main(argv)
