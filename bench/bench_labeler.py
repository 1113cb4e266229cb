"""Labeler benchmark: prompt sizes, prefix sharing, CPU outside the LLM, invalid/fallback rates.

    .venv/bin/python bench/bench_labeler.py                 # parts A+B on the `small` preset (~2 min)
    .venv/bin/python bench/bench_labeler.py --real-llm 3    # + part C: 3 users on the real SmolLM2 (slow)
    .venv/bin/python bench/bench_labeler.py --no-cpu        # part A only (tokens and prefix cache)
    .venv/bin/python bench/bench_labeler.py --no-cpu --no-tokens --demo-caps --users 20 --precision 20
                                                            # part D: precision vs planted truth (slow)

A. Prompt tokens per user per stage (SmolLM2's tokenizer over the ChatML-rendered prompt) and the share of
   each user's prompt tokens that is a prefix already sent before; then a block-level prefix-cache
   simulation as vLLM's automatic prefix caching does it: 16-token blocks, a block is reused only when it
   and every block before it were seen (chained block hashes), the last prompt token is always computed,
   requests in the order the pipeline sent them, every block kept (``--cache-blocks`` for an LRU of that
   many blocks). It gives **uncached prefill tokens per user**: what a caching server actually computes.
B. CPU time per user spent outside the LLM: the scripted server answers instantly in a separate process,
   so this process's CPU time is the pipeline's own (candidate space, prompts, parsing, SQL writes).
C. Invalid-output and fallback rates on the real local model, with and without decode-time constraints.
D. ``--precision N``: N users labeled by the real SmolLM2 on the embedded default server, as it starts
   (``labeler.local_server``): label precision against the synthetic planted truth (a labeled item is right
   when its leaf is one of the user's planted taste leaves), the share of users labeled without any
   fallback, and wall seconds per user (users per hour). Run it on two checkouts for a before/after.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections import OrderedDict, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coldlabel.config import load_settings  # noqa: E402
from coldlabel.store import Store  # noqa: E402
from labeler import pipeline  # noqa: E402

STAGE_OF = {"profile": "profile", "categories": "categories", "subcategories": "subcategories",
            "asins": "items", "items": "rerank"}


def ensure_dataset(root: Path, preset: str, settings) -> None:
    from coldlabel.data import synth
    from coldlabel.data.prepare import prepare
    from coldlabel.data.workspace import Workspace
    from retrieval.build import build

    ws = Workspace.of(root, preset)
    if not ws.raw.exists():
        synth.generate(preset, ws.root, seed=0)
    prepare(ws, settings.data)
    build(ws, settings)


def label_users(settings, dataset: str, users: list[int], store: Store, run_id: str, endpoint: str):
    store.create_run(run_id=run_id, dataset=dataset, endpoint=endpoint, model="m", prompt_version="b", config={})
    store.add_users(run_id, [(u, str(u)) for u in users])

    async def go():
        ctx = pipeline.open_context(settings, dataset, endpoint, store=store)
        outs = []
        async with ctx.client:
            for u in users:
                outs.append(await pipeline.label_user(ctx, run_id, u))
        return outs
    return asyncio.run(go())


def stage_of(body: dict) -> str:
    props = ((body.get("response_format") or {}).get("schema") or {}).get("properties") or {}
    return next(STAGE_OF[p] for p in STAGE_OF if p in props)


def chatml(messages: list[dict]) -> bytes:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages).encode() \
        + b"<|im_start|>assistant\n"


def lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


BLOCK = 16  # vLLM's default KV block size; automatic prefix caching reuses whole blocks only


class PrefixCache:
    """vLLM automatic prefix caching, reduced to what decides reuse: a full block is identified by the hash
    of its tokens and of the block before it; a request reuses its longest run of leading cached blocks and
    always computes at least its last token. ``capacity`` blocks, least recently used evicted (0: unbounded)."""

    def __init__(self, block: int = BLOCK, capacity: int = 0):
        self.block, self.capacity = block, capacity
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def prefill(self, tokens: list[int]) -> int:
        """Tokens this request computes (its uncached prefill); its full blocks are cached afterwards."""
        hashes, parent = [], 0
        for start in range(0, len(tokens) - len(tokens) % self.block, self.block):
            parent = hash((parent, tuple(tokens[start:start + self.block])))
            hashes.append(parent)
        hit = 0
        while hit < len(hashes) and hashes[hit] in self.blocks:
            hit += 1
        for h in hashes:
            self.blocks[h] = None
            self.blocks.move_to_end(h)
        while self.capacity and len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        return len(tokens) - min(hit * self.block, len(tokens) - 1)


def part_a(settings, dataset, users, tmp: Path, cache_blocks: int = 0) -> str:
    from llama_cpp import Llama

    from coldlabel_testing.fake_server import FakeLLMServer
    from labeler.local_server import gguf_path

    vocab = Llama(model_path=str(gguf_path()), vocab_only=True, verbose=False)
    with FakeLLMServer() as server, Store(f"sqlite:///{tmp / 'a.db'}") as store:
        s = load_settings(None, [*OVERRIDES, f"endpoints.fake.base_url={server.base_url}"], environ={})
        label_users(s, dataset, users, store, "tokens", "fake")
        bodies = list(server.requests)
    per_stage: dict[str, list[int]] = defaultdict(list)
    per_user_calls: dict[str, list[list[int]]] = defaultdict(list)
    seen_all: list[list[int]] = []
    own_shared = any_shared = total = uncached = 0
    cache = PrefixCache(BLOCK, cache_blocks)
    for body in bodies:
        toks = vocab.tokenize(chatml(body["messages"]), add_bos=False, special=True)
        # the history block names the user (stage 1 has no profile line yet)
        user_key = body["messages"][1]["content"].split("\n\n", 1)[0].split("\nShopper profile:")[0]
        earlier = per_user_calls[user_key]
        own_shared += max((lcp(toks, e) for e in earlier), default=0)
        any_shared += max((lcp(toks, e) for e in seen_all), default=0)
        total += len(toks)
        uncached += cache.prefill(toks)
        earlier.append(toks)
        seen_all.append(toks)
        per_stage[stage_of(body)].append(len(toks))
    n_users = len(users)
    lines = ["| stage | calls per user | prompt tokens per call (mean) | prompt tokens per user |",
             "|---|---|---|---|"]
    for stage in ("profile", "categories", "subcategories", "items", "rerank"):
        v = per_stage.get(stage, [])
        if v:
            lines.append(f"| {stage} | {len(v) / n_users:.1f} | {statistics.mean(v):.0f} | {sum(v) / n_users:.0f} |")
    lines.append(f"| **all** | {len(bodies) / n_users:.1f} | {total / len(bodies):.0f} | {total / n_users:.0f} |")
    lines.append("")
    lines.append(f"Shared prefix: **{100 * own_shared / total:.1f}%** of a user's prompt tokens repeat a prefix of "
                 f"that user's earlier calls; **{100 * any_shared / total:.1f}%** repeat a prefix of any earlier call "
                 f"(the static system block is shared across users). {n_users} users, {len(bodies)} calls.")
    lines.append("")
    cap = f"LRU of {cache_blocks} blocks" if cache_blocks else "unbounded"
    lines.append(f"Prefix-cache simulation ({BLOCK}-token blocks, {cap}, requests in the order sent): "
                 f"**{total / n_users:.0f} prompt tokens per user**, of which **{uncached / n_users:.0f} uncached "
                 f"prefill tokens per user** ({100 * (1 - uncached / total):.1f}% served from cache).")
    return "\n".join(lines)


def _serve_instant(port_q):
    from coldlabel_testing.fake_server import FakeLLMServer

    srv = FakeLLMServer().start()
    port_q.put(srv.base_url)
    time.sleep(3600)


def part_b(settings, dataset, users, tmp: Path, profile_to: str = "") -> str:
    """``profile_to``: write cProfile stats (CPU-time clock) there; the profiler inflates the figure ~3x."""
    spawn = mp.get_context("spawn")  # a fresh interpreter: none of this process's threads or CPU time
    q = spawn.Queue()
    proc = spawn.Process(target=_serve_instant, args=(q,), daemon=True)
    proc.start()
    try:
        url = q.get(timeout=60)
        s = load_settings(None, [*OVERRIDES, f"endpoints.fake.base_url={url}"], environ={})
        pipeline.load_space(s, dataset)  # loading the space once per process is not per-user work
        with Store(f"sqlite:///{tmp / 'b.db'}") as store:
            profile = cProfile.Profile(time.process_time) if profile_to else None
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if profile is not None:
                profile.enable()
            label_users(s, dataset, users, store, "cpu", "fake")
            if profile is not None:
                profile.disable()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            if profile is not None:
                profile.dump_stats(profile_to)
    finally:
        proc.kill()
    n = len(users)
    return (f"CPU outside the LLM: **{1000 * cpu / n:.0f} ms per user** ({n} users, wall {1000 * wall / n:.0f} ms "
            f"per user against an instant server in another process; includes candidate search, evidence, prompt "
            f"building, parsing, SQLite writes).")


def part_c(settings, dataset, users, tmp: Path) -> str:
    from labeler.local_server import start_local_server

    rows = ["| decode-time constraint | calls | invalid ids per call | stage answers that fell back | "
            "fallback rate | wall s per user |", "|---|---|---|---|---|---|"]
    with start_local_server(8799, "smollm2-135m-instruct", tmp / "llm.log") as srv:
        for constrained in (True, False):
            s = load_settings(None, [*OVERRIDES, "labeler.endpoint=local", f"endpoints.local.base_url={srv.base_url}",
                                     f"labeler.constrained={'true' if constrained else 'false'}",
                                     "labeler.timeout_s=600"], environ={})
            with Store(f"sqlite:///{tmp / f'c{constrained}.db'}") as store:
                t0 = time.perf_counter()
                outs = label_users(s, dataset, users, store, f"real-{constrained}", "local")
                wall = time.perf_counter() - t0
            calls = sum(o.counters.llm_calls + o.counters.cache_hits for o in outs)
            stages = sum(len(o.stages) for o in outs)
            fb = sum(o.counters.fallbacks for o in outs)
            inv = sum(o.counters.invalid_ids for o in outs)
            rows.append(f"| {'on (enum schema)' if constrained else 'off (prompt only)'} | {calls} | {inv / calls:.2f} | "
                        f"{fb} / {stages} | {100 * fb / stages:.0f}% | {wall / len(users):.0f} |")
    return "\n".join(rows)


def part_d(settings, dataset, users, tmp: Path, root: Path) -> str:
    import gzip
    import json

    from labeler.local_server import start_local_server

    truth = json.loads(gzip.decompress((root / dataset / "truth" / "truth.json.gz").read_bytes()))
    with start_local_server(8798, "smollm2-135m-instruct", tmp / "llm-d.log") as srv:
        s = load_settings(None, [*OVERRIDES, "labeler.endpoint=local", f"endpoints.local.base_url={srv.base_url}",
                                 "labeler.timeout_s=600", "labeler.request_deadline_s=1200"], environ={})
        with Store(f"sqlite:///{tmp / 'd.db'}") as store:
            t0 = time.perf_counter()
            outs = label_users(s, dataset, users, store, "precision", "local")
            wall = time.perf_counter() - t0
    hits = total = clean_hits = clean_total = 0
    for o in outs:
        leaves = {tuple(p) for p in truth["users"][o.user_id]["leaves"]}
        for e in o.edges:
            ok = tuple(truth["items"][e.item_id]["leaf"]) in leaves
            hits, total = hits + ok, total + 1
            if not e.from_fallback:
                clean_hits, clean_total = clean_hits + ok, clean_total + 1
    no_fallback = sum(o.counters.fallbacks == 0 for o in outs)
    n = len(outs)
    return (f"Real SmolLM2, {n} users: label precision vs planted taste leaves **{hits / max(total, 1):.3f}** "
            f"({hits}/{total} labeled items; {clean_hits / max(clean_total, 1):.3f} on labels not from a fallback), "
            f"users without any fallback **{no_fallback}/{n}**, stage fallbacks "
            f"{sum(o.counters.fallbacks for o in outs)}, **{wall / n:.1f} s per user** "
            f"({3600 * n / wall:.0f} users per hour).")


OVERRIDES: list[str] = []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default="/tmp/coldlabel-bench", help="data root (outside the repo)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--real-llm", type=int, default=0, help="users for part C on the real local model (slow)")
    ap.add_argument("--demo-caps", action="store_true", help="3 subcategories x 20 candidates instead of 8 x 80")
    ap.add_argument("--no-cpu", action="store_true", help="skip part B (CPU time outside the LLM)")
    ap.add_argument("--no-tokens", "--skip-tokens", dest="no_tokens", action="store_true",
                    help="skip part A (prompt tokens, prefix cache)")
    ap.add_argument("--precision", type=int, default=0,
                    help="users for part D: precision vs planted truth on the real local model (slow)")
    ap.add_argument("--cache-blocks", type=int, default=0, help="prefix-cache capacity in blocks (0: unbounded)")
    ap.add_argument("--profile", default="", help="write part B's cProfile stats (CPU-time clock) to this file")
    args = ap.parse_args()
    caps = ["labeler.top_k_subcategories=3", "labeler.max_candidates_per_subcategory=20"] if args.demo_caps else []
    OVERRIDES[:] = [f"data.root={args.root}", "retrieval.tt_epochs=20", *caps,
                    "endpoints.fake.model=fake-model", "endpoints.fake.dialect=llamacpp",
                    "endpoints.fake.concurrency=8", "endpoints.fake.base_url=http://127.0.0.1:9/v1"]
    settings = load_settings(None, OVERRIDES, environ={})
    ensure_dataset(Path(args.root), args.preset, settings)
    space = pipeline.load_space(settings, args.preset)
    users = space.users()[: args.users]
    lab = settings.labeler
    cap = f"{lab.top_k_subcategories} subcategories x {lab.max_candidates_per_subcategory} candidates"
    print(f"## Labeler ({args.preset} preset, {cap})\n")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_tokens:
            print(part_a(settings, args.preset, users, Path(tmp), args.cache_blocks) + "\n")
        if not args.no_cpu:
            print(part_b(settings, args.preset, users, Path(tmp), args.profile) + "\n")
        if args.real_llm:
            print(part_c(settings, args.preset, users[: args.real_llm], Path(tmp)) + "\n")
        if args.precision:
            print(part_d(settings, args.preset, users[: args.precision], Path(tmp), Path(args.root)) + "\n")
    print(f"Command: `.venv/bin/python bench/bench_labeler.py {' '.join(sys.argv[1:])}`")


if __name__ == "__main__":
    main()
