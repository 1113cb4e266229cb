"""The ``coldlabel`` command. Each area owns its sub-commands in its own module; this file only wires them.

Heavy libraries (torch, faiss, sentence-transformers) are imported inside the commands, so ``--help`` and
the light commands start instantly.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from coldlabel.config import ConfigError, Settings, load_settings
from coldlabel.log import setup_logging

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="coldlabel: LLM labels for strict item cold-start in sequential recommenders.")


@app.callback()
def _root(
    ctx: typer.Context,
    config: Optional[str] = typer.Option(None, "--config", "-c", help="TOML config file (or COLDLABEL_CONFIG)."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting: section.key=value (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    setup_logging(logging.DEBUG if verbose else logging.INFO)
    ctx.obj = {"config": config, "overrides": list(set_)}


def settings_from(ctx: typer.Context, extra: list[str] | None = None,
                  command_defaults: list[str] | None = None) -> Settings:
    """Settings for a command: root --config/--set, then the command's own flags (``extra``);
    ``command_defaults`` sit under the config file, env vars and flags."""
    root = ctx.find_root().obj or {}
    return load_settings(root.get("config"), [*root.get("overrides", []), *(extra or [])],
                         command_defaults=command_defaults)


def _register() -> None:
    from retrieval.cli import data_app, retrieval_app
    app.add_typer(data_app, name="data", help="Raw files -> processed, split dataset workspace.")
    app.add_typer(retrieval_app, name="retrieval", help="Encoder, Two-Tower, FAISS candidates, leaves, evidence.")
    from coldlabel.demo import demo_command
    app.command("demo", help="Run the main job end to end on the embedded default.")(demo_command)
    from labeler.db_cli import db_app
    app.add_typer(db_app, name="db", help="The SQL store: create/upgrade the schema (Alembic).")
    try:
        from workers.cli import label_app, llm_app, worker_command
    except ImportError:  # pragma: no cover - only while the package is being assembled
        return
    from labeler.cli import label_user_command, report_command
    label_app.command("user", help="Label one user in the foreground; print every stage.")(label_user_command)
    label_app.command("report", help="Markdown + HTML report of a run, with plots.")(report_command)
    app.add_typer(label_app, name="label", help="Label users with the five-stage LLM pipeline.")
    app.add_typer(llm_app, name="llm", help="Start or check LLM endpoints.")
    app.command("worker", help="Start a Celery worker that labels users from the queue.")(worker_command)
    try:
        from trainer.cli import train_app
    except ImportError:  # pragma: no cover
        return
    app.add_typer(train_app, name="train", help="SASRec with pseudo edges and triplets; E0-E3 report.")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "fix your input or start a service", shown as one line instead of a traceback."""
    from labeler.client import EndpointError
    from labeler.local_server import LocalServerError
    from labeler.store import StoreError
    from retrieval.workspace import WorkspaceError

    return EndpointError, LocalServerError, StoreError, WorkspaceError, FileNotFoundError


def main() -> None:
    _register()
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"config error: {exc}", fg="red", err=True)
        sys.exit(2)
    except _user_errors() as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
