"""What every command needs: its settings, its workspace, its store, one console, small option parsers."""
from __future__ import annotations

import logging

import typer
from rich.console import Console

from coldlabel.config import Settings, load_settings
from coldlabel.data.workspace import Workspace
from coldlabel.store import Store

console = Console()


def settings_from(ctx: typer.Context, extra: list[str] | None = None,
                  command_defaults: list[str] | None = None) -> Settings:
    """Settings for a command: root --config/--set, then the command's own flags (``extra``);
    ``command_defaults`` sit under the config file, env vars and flags."""
    root = ctx.find_root().obj or {}
    return load_settings(root.get("config"), [*root.get("overrides", []), *(extra or [])],
                         command_defaults=command_defaults)


def workspace(ctx: typer.Context, dataset: str) -> tuple[Workspace, Settings]:
    """The dataset's workspace under ``data.root`` and the command's settings."""
    settings = settings_from(ctx)
    return Workspace.of(settings.data.root, dataset), settings


def open_store(settings: Settings) -> Store:
    """The configured store (SQLite under data.root unless ``store.url`` says otherwise)."""
    return Store(settings.store_url())


def quiet_http_logs() -> None:
    """One INFO line per LLM request drowns the progress bar and the worker log; keep warnings."""
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise typer.BadParameter(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"{what}: empty list")
    return values


def users_option(users: str) -> int | None:
    """``--users N`` or ``--users all``."""
    if users == "all":
        return None
    if not users.isdigit() or int(users) < 1:
        raise typer.BadParameter(f"--users must be a positive number or 'all', got {users!r}")
    return int(users)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return (f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600
            else f"{seconds // 60}m{seconds % 60:02d}s")
