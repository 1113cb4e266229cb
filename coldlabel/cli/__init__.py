"""The ``coldlabel`` command: the top of the layer stack. One module per command group; this file wires
them and holds the one error handler of the whole program.

Known errors (:class:`coldlabel.errors.ColdlabelError`) become one red line and their exit code (1, 2 for a
bad configuration, 3 for a run that ended degraded); anything else is a bug and keeps its traceback.

Command groups are loaded when they are called (click's documented lazy-group pattern): ``coldlabel data``
never pays for importing torch, FAISS and the LLM client, and ``coldlabel --help`` answers at once.
"""
from __future__ import annotations

import importlib
import logging
from typing import Optional

import typer
from typer import _click as click  # typer ships its own click; its types are the ones to subclass
from typer.core import TyperGroup

from coldlabel.errors import ColdlabelError
from coldlabel.log import setup_logging

# name -> (module under coldlabel.cli holding a Typer ``app``, one-line help shown by --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("data", "Raw files -> processed, split dataset workspace."),
    "retrieval": ("retrieval", "Encoder, Two-Tower, FAISS candidates, leaves, evidence."),
    "label": ("label", "Label users with the five-stage LLM pipeline."),
    "worker": ("worker", "Start a Celery worker that labels users from the queue."),
    "llm": ("llm", "Start or check LLM endpoints."),
    "db": ("db", "The SQL store: create/upgrade the schema (Alembic)."),
    "train": ("train", "Train and evaluate E0-E3 and the baselines over seeds (resumable)."),
    "report": ("report", "Markdown + HTML report of stored training results and their labels."),
    "run": ("run", "The whole job: data → retrieval → labels (LLM and no-LLM) → train E0/E3 → report."),
    "demo": ("demo", "`run` on a synthetic preset, with caps the local SmolLM2 answers in minutes."),
}


class LazyGroup(TyperGroup):
    """Imports a command group's module only when that group is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"coldlabel.cli.{COMMANDS[name][0]}")
        return typer.main.get_command(module.app)

    def invoke(self, ctx: click.Context) -> object:
        """The one error handler: a known error is one red line and its exit code; a bug keeps its traceback."""
        try:
            return super().invoke(ctx)
        except ColdlabelError as exc:
            typer.secho(f"{exc.prefix}: {exc}", fg="yellow" if exc.exit_code == 3 else "red", err=True)
            raise typer.Exit(exc.exit_code) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


app = typer.Typer(cls=LazyGroup, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]},
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


def main() -> None:
    app()
