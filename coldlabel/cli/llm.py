"""``coldlabel llm serve|check``: start the local LLM server (or vLLM), verify any endpoint."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import typer

from coldlabel.cli.common import console, settings_from
from coldlabel.errors import LocalServerError
from labeler.endpoint_check import check_endpoint
from labeler.local_server import start_local_server

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8765 for llama.cpp, the vllm "
                                                             "endpoint's port with --vllm)."),
    vllm: bool = typer.Option(False, "--vllm", help="Run `vllm serve` with endpoints.vllm.model instead."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", "-e", help="Endpoint whose model to serve."),
) -> None:
    """Start an LLM server in the foreground: the packaged SmolLM2 on llama.cpp, or vLLM."""
    settings = settings_from(ctx)
    if vllm:
        ep = settings.endpoint(endpoint or "vllm")
        if importlib.util.find_spec("vllm") is None or shutil.which("vllm") is None:
            raise LocalServerError("vllm is not installed here (`pip install -e .[vllm]` on a GPU host, "
                                   "or use the compose file)")
        cmd = ["vllm", "serve", ep.model, "--port", str(port or urlparse(ep.base_url).port or 8000),
               "--enable-prefix-caching"]
        console.print("running: " + " ".join(cmd))
        os.execvp(cmd[0], cmd)
    ep = settings.endpoint(endpoint or "local")
    port = port or urlparse(ep.base_url).port or 8765
    log_path = Path(settings.data.root) / "llm-server.log"
    server = start_local_server(port, ep.model, log_path)
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



@app.command("check")
def check_command(ctx: typer.Context, name: str = typer.Argument(..., help="Endpoint name under [endpoints].")) -> None:
    """Verify an endpoint: reachable, serves the configured model, answers with schema-valid JSON."""
    ok, lines = check_endpoint(settings_from(ctx), name)
    for line in lines[:-1]:
        console.print(line, highlight=False)
    console.print(lines[-1], style="bold green" if ok else "bold red", highlight=False)
    if not ok:
        raise typer.Exit(1)
