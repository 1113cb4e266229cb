"""Prefix reuse on the embedded default (llama-cpp-python's server), with users interleaved.

    .venv/bin/python bench/bench_prompt_cache.py --root /tmp/cost-bench

The real stage-4 requests of one `small` user (rendered by the pipeline against a scripted server), and the same
requests for a second shopper (another first history line), are sent alternately — as a worker with several
users in flight sends them to the one-at-a-time server — twice: to a server without and with ``--cache`` (the
RAM prompt cache ``labeler.local_server`` turns on). Reports wall time and the prompt tokens the server
evaluated per request (its ``prefix-match hit, remaining N`` log lines).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_labeler import OVERRIDES, ensure_dataset, label_users  # noqa: E402

from coldlabel.config import load_settings  # noqa: E402
from coldlabel.store import Store  # noqa: E402
from coldlabel_testing.fake_server import FakeLLMServer  # noqa: E402
from labeler import pipeline  # noqa: E402
from labeler.local_server import _served_models, gguf_path  # noqa: E402


def stage4_bodies(root: Path, calls: int) -> list[dict]:
    """The ``calls`` shortest stage-4 requests of the first `small` user, as the pipeline sends them."""
    with FakeLLMServer() as server, tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{tmp}/p.db") as store:
        s = load_settings(None, [*OVERRIDES, f"endpoints.fake.base_url={server.base_url}"], environ={})
        ensure_dataset(root, "small", s)
        label_users(s, "small", pipeline.load_space(s, "small").users()[:1], store, "p", "fake")
        items = [b for b in server.requests if "asins" in json.dumps(b.get("response_format"))]
    return sorted(items, key=lambda b: len(b["messages"][-1]["content"]))[:calls]


def second_shopper(body: dict) -> dict:
    body = json.loads(json.dumps(body))
    body["messages"][1]["content"] = body["messages"][1]["content"].replace('h1 "', 'h1 "Another shopper, ', 1)
    return body


def serve(port: int, cache_mb: int, log: Path) -> subprocess.Popen:
    """The embedded server's own entry point (``labeler.llama_entry``), with or without the prompt cache."""
    cmd = [sys.executable, "-m", "labeler.llama_entry", "--model", str(gguf_path()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "8192", "--chat_format", "chatml", "--model_alias", "m"]
    if cache_mb:
        cmd += ["--cache", "true", "--cache_type", "ram", "--cache_size", str(cache_mb << 20)]
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    while _served_models(f"http://127.0.0.1:{port}/v1") is None:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {log}")
        time.sleep(0.5)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/tmp/coldlabel-bench")
    ap.add_argument("--calls", type=int, default=2, help="stage-4 calls per shopper")
    ap.add_argument("--cache-mb", type=int, default=512)
    args = ap.parse_args()
    OVERRIDES[:] = [f"data.root={args.root}", "retrieval.tt_epochs=20", "endpoints.fake.model=fake-model",
                    "endpoints.fake.dialect=llamacpp", "endpoints.fake.concurrency=8",
                    "endpoints.fake.base_url=http://127.0.0.1:9/v1"]
    bodies = stage4_bodies(Path(args.root), args.calls)
    sequence = [b for body in bodies for b in (body, second_shopper(body))]
    with tempfile.TemporaryDirectory() as tmp:
        for cache_mb in (0, args.cache_mb):
            log = Path(tmp) / f"llm-{cache_mb}.log"
            proc = serve(8797, cache_mb, log)
            try:
                t0 = time.perf_counter()
                for body in sequence:
                    httpx.post("http://127.0.0.1:8797/v1/chat/completions", timeout=1200, json={
                        "model": "m", "messages": body["messages"], "max_tokens": 4, "temperature": 0,
                        "response_format": body.get("response_format")}).raise_for_status()
                wall = time.perf_counter() - t0
            finally:
                proc.terminate()
                proc.wait()
            evaluated = [int(n) for n in re.findall(r"remaining (\d+) prompt tokens", log.read_text())]
            first = len(sequence) - len(evaluated)  # the very first request has no prefix-match line
            print(f"- prompt cache {'off' if not cache_mb else f'{cache_mb} MB'}: {len(sequence)} interleaved "
                  f"stage-4 requests of 2 shoppers in {wall:.1f} s; prompt tokens evaluated per request after "
                  f"the first {first}: {evaluated}")
    print(f"\nCommand: `.venv/bin/python bench/bench_prompt_cache.py {' '.join(sys.argv[1:])}`")


if __name__ == "__main__":
    main()
