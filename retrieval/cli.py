"""``coldlabel retrieval …`` (placeholder until the retrieval commands land)."""
from __future__ import annotations

import typer

from retrieval.data_cli import data_app  # noqa: F401  (re-exported for coldlabel/cli.py)

retrieval_app = typer.Typer(no_args_is_help=True)
