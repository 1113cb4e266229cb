"""Retrieval benchmark: wall time and peak memory of each stage, and candidate recall@M.

    .venv/bin/python bench/bench_retrieval.py --preset beauty --out /tmp/cl_bench

Generates the synthetic preset (once) into ``--out``, prepares it, then force-rebuilds every retrieval stage
with an empty encoder cache (``--keep-cache`` to skip encoding), generates top-M candidates for every user,
precomputes evidence for every item, builds candidate spaces for a sample of users, and measures recall@M
of the Two-Tower beside popularity and content-only baselines. Prints a markdown table.

Peak memory is the process RSS, sampled every 20 ms while a step runs (so it includes the interpreter,
torch and the model: read the deltas as what a step adds).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil

from coldlabel.config import load_settings
from coldlabel.data.workspace import Workspace


class PeakRSS:
    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def reset(self) -> int:
        now = self.proc.memory_info().rss
        self.peak = now
        return now

    def stop(self) -> None:
        self._stop.set()


ROWS: list[tuple[str, float, float, float, str]] = []  # step, seconds, peak MiB, delta MiB, note


@contextmanager
def step(name: str, rss: PeakRSS, note: str = ""):
    base = rss.reset()
    started = time.perf_counter()
    box = {"note": note}
    yield box
    seconds = time.perf_counter() - started
    time.sleep(0.03)
    ROWS.append((name, seconds, rss.peak / 2**20, (rss.peak - base) / 2**20, box["note"]))
    print(f"  {name}: {seconds:.1f}s, peak {rss.peak / 2**20:.0f} MiB  {box['note']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="beauty")
    ap.add_argument("--out", default="/tmp/cl_bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ms", default="50,200,500,1000,2000")
    ap.add_argument("--space-users", type=int, default=200, help="users to build a full UserSpace for")
    ap.add_argument("--keep-cache", action="store_true", help="reuse the encoder cache (skip MiniLM encoding)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = ap.parse_args()

    import torch

    from coldlabel.data import synth
    from coldlabel.data.prepare import prepare
    from retrieval.build import build
    from retrieval.encoder import CACHE_FILE
    from retrieval.evidence import Evidence
    from retrieval.index import CandidateIndex, candidate_recall
    from retrieval.space import CandidateSpace

    settings = load_settings(environ={}, overrides=args.overrides)
    ws = Workspace(Path(args.out) / args.preset)
    rss = PeakRSS()
    print(f"retrieval benchmark: preset={args.preset} out={ws.root} cores={os.cpu_count()} "
          f"torch threads={torch.get_num_threads()}", flush=True)
    if not (ws.raw).exists():
        with step("synth (data generation)", rss):
            synth.generate(args.preset, ws.root, seed=args.seed)
    with step("prepare", rss):
        prepare(ws, settings.data)
    table = ws.stats["table"]
    n_items, n_users = len(ws.items), len(ws.mappings["user2idx"])
    n_pos = sum(1 for x in ws.train if x.weight > 0)
    print(f"  {n_items:,} items, {n_users:,} users, {len(ws.train):,} train rows ({n_pos:,} positives), "
          f"{table['Cold items']} cold items", flush=True)
    if not args.keep_cache:
        (ws.retrieval / CACHE_FILE).unlink(missing_ok=True)

    # ---- build stages, one timed step each ---------------------------------------------------------------
    current: dict = {}

    def hook(event: str, data: dict) -> None:
        if event == "stage_start":
            current["ctx"] = step(f"build: {data['stage']}", rss)
            current["box"] = current["ctx"].__enter__()
        elif event == "stage_done":
            current["ctx"].__exit__(None, None, None)
        elif event == "tt_epoch" and data["epoch"] % 10 == 0:
            print(f"    epoch {data['epoch']}: loss {data['loss']:.4f}", flush=True)

    results = {r.stage: r.facts for r in build(ws, settings, force=True, hook=hook)}
    ct, tt, lv = results["content"], results["two_tower"], results["leaves"]
    notes = {
        "build: content": f"{ct['encoded_now']:,} texts encoded (MiniLM, batch {settings.retrieval.encoder_batch_size})",
        "build: two_tower": f"{tt['train_rows']:,} rows × {tt['epochs']} epochs, loss {tt['losses'][0]:.3f} → "
                            f"{tt['final_loss']:.3f}",
        "build: index": f"IndexFlatIP {tt['n_items']:,} × {tt['dim']}",
        "build: leaves": f"{lv['n_leaves']:,} leaves (largest {lv['max_leaf']}; {lv['methods']})",
    }
    ROWS[:] = [(n, s, p, d, notes.get(n, note)) for n, s, p, d, note in ROWS]

    # ---- candidates for all users --------------------------------------------------------------------------
    m = settings.retrieval.candidates
    index = CandidateIndex.load(ws, settings)
    users = sorted(u for u, seq in ws.sequences.items() if seq)
    with step("candidates: all users", rss) as box:
        total = 0
        for start in range(0, len(users), 4096):
            ids, _ = index.search(users[start:start + 4096], m)
            total += int((ids >= 0).sum())
        box["note"] = f"{len(users):,} users × top-{m} (seen-filtered), {total:,} candidates"

    # ---- evidence -------------------------------------------------------------------------------------------
    r = settings.retrieval
    with step("evidence: all items", rss) as box:
        ev = Evidence(ws.items, index.item_vectors, r.evidence_k, r.evidence_min_sim, index=index.index)
        ev.prefetch(range(n_items))
        counts = np.array([len(ev.for_item(i)) for i in range(n_items)])
        box["note"] = f"{n_items:,} items, mean {counts.mean():.2f} snippets, {np.mean(counts == 0):.1%} none"

    # ---- candidate spaces ------------------------------------------------------------------------------------
    space = CandidateSpace.load(ws, settings)
    sample = users[:: max(1, len(users) // args.space_users)][:args.space_users]
    with step(f"space: {len(sample)} users (cold evidence)", rss) as box:
        sizes = [sum(len(c) for c in space.for_user(u).candidates.values()) for u in sample]
        box["note"] = f"mean {np.mean(sizes):.0f} candidates shown / user"
    with step(f"space: same {len(sample)} users again (warm)", rss) as box:
        for u in sample:
            space.for_user(u)
        box["note"] = "evidence cached"

    # ---- recall -----------------------------------------------------------------------------------------------
    ms = [int(x) for x in args.ms.split(",")]
    with step("recall: 3 retrievers", rss) as box:
        report = candidate_recall(ws, settings, ms)
        box["note"] = f"{report['users']:,} users"
    rss.stop()

    print("\n### Retrieval stages\n")
    print(f"Preset `{args.preset}` (seed {args.seed}): {n_items:,} items, {n_users:,} users, {len(ws.train):,} "
          f"train rows; {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads).\n")
    print("| step | wall s | peak RSS MiB | +MiB | note |\n|---|---:|---:|---:|---|")
    for name, seconds, peak, delta, note in ROWS:
        print(f"| {name} | {seconds:.1f} | {peak:.0f} | {delta:+.0f} | {note} |")
    tp = report["test_positives"]
    print(f"\n### Candidate recall@M ({report['users']:,} users; {tp['cold']:,} cold / {tp['warm']:,} warm test "
          f"positives; {tp['skipped_user_without_history']:,} positives of users without training history and "
          f"{tp['skipped_seen_in_train']:,} already-seen items excluded)\n")
    print("| retriever | items | " + " | ".join(f"@{m}" for m in report["ms"]) + " |")
    print("|---|---|" + "---:|" * len(report["ms"]))
    for name, res in report["retrievers"].items():
        for part in ("cold", "warm", "all"):
            vals = " | ".join("–" if v is None else f"{v:.3f}" for v in res[part])
            print(f"| {name if part == 'cold' else ''} | {part} | {vals} |")


if __name__ == "__main__":
    main()
