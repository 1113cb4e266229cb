"""``coldlabel db``: create or upgrade the store's schema, and show its revision.

SQLite stores are upgraded automatically when opened; PostgreSQL ones only by ``coldlabel db upgrade``
(see ``coldlabel/store/engine.py``).
"""
from __future__ import annotations

from typing import Optional

import typer

from coldlabel.cli.common import settings_from
from coldlabel.store import current_revision, head_revision, redact, upgrade

app = typer.Typer(no_args_is_help=True, add_completion=False,
                     help="The SQL store: schema migrations (Alembic).")

_URL_HELP = "Database URL (default: store.url, else the SQLite file under data.root)."


def _store_url(ctx: typer.Context, url: Optional[str]) -> str:
    return url or settings_from(ctx).store_url()


@app.command("upgrade")
def upgrade_command(
    ctx: typer.Context,
    revision: str = typer.Argument("head", help="Target revision."),
    url: Optional[str] = typer.Option(None, "--url", help=_URL_HELP),
) -> None:
    """Create the tables or bring them up to the newest schema (safe to run again)."""
    url = _store_url(ctx, url)
    before = current_revision(url)
    upgrade(url, revision)
    after = current_revision(url)
    change = "already at" if before == after else f"{before or '<empty>'} ->"
    typer.echo(f"{redact(url)}: {change} {after}")


@app.command("current")
def current_command(
    ctx: typer.Context,
    url: Optional[str] = typer.Option(None, "--url", help=_URL_HELP),
) -> None:
    """Show the database's schema revision and whether it is the newest; exit 1 when behind."""
    url = _store_url(ctx, url)
    current, head = current_revision(url), head_revision()
    state = "up to date" if current == head else "behind: run `coldlabel db upgrade`"
    typer.echo(f"{redact(url)}: revision {current or '<empty>'} (head {head}, {state})")
    if current != head:
        raise typer.Exit(1)
