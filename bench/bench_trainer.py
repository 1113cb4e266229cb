"""Trainer benchmark: E0 (SASRec, no labels) or, with ``--run``, E3 on that labeling run's labels, on a
prepared, retrieval-built dataset.

    .venv/bin/python bench/bench_trainer.py --data-root /tmp/cl_bench --dataset beauty --epochs 2
    .venv/bin/python bench/bench_trainer.py --data-root /tmp/grid --dataset beauty --epochs 2 --run RUN_ID

Reports the time to load the training and evaluation data, the time of each epoch (fitting steps plus the
validation pass), and the time to evaluate every test user over the Two-Tower top-M in ``hybrid`` and ``sas``
modes (``--full`` adds a full-catalog ``sas`` pass). Peak memory is the process RSS, sampled every 20 ms,
so it includes the interpreter and torch. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil
import torch

from trainer import data
from trainer.evaluate import evaluate, full_catalog_search, subset_metrics
from trainer.train import train


class PeakRSS:
    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="also evaluate sas over the full catalog")
    ap.add_argument("--e0-users", default="", help="with E0: also report on the users this labeling run labeled")
    ap.add_argument("--run", default="", help="train E3 on this labeling run's edges and triplets (from the store)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = ap.parse_args()

    settings = data.load_settings(None, [f"data.root={args.data_root}", *args.overrides])
    ws = data.open_workspace(args.data_root, args.dataset)
    rss = PeakRSS()
    rows: list[tuple[str, float, str]] = []

    def mark(name: str, started: float, note: str = "") -> None:
        seconds = time.perf_counter() - started
        rows.append((name, seconds, note))
        print(f"  {name}: {seconds:.1f}s  peak {rss.peak / 2**20:.0f} MiB  {note}", flush=True)

    t = time.perf_counter()
    td = data.load_training_data(ws, settings)
    mark("load training data", t, f"{td.n_users:,} users, {td.n_items:,} items, {len(td.valid_users):,} valid, "
         f"{len(td.sequences.values):,} positives, pool {td.neg_pool.lengths.mean():.0f}/user")
    t = time.perf_counter()
    ev = data.load_eval_data(ws, settings)
    mark("load evaluation data", t, f"{len(ev.users):,} test users, {len(ev.positives.values):,} positives, M={ev.m}")

    cfg = data.train_config(settings, epochs=args.epochs, patience=0)
    labels = labeled = None
    if args.run:
        t = time.perf_counter()
        labels = data.labels_from_store(ws, td, settings.store_url(), args.run)
        cfg = cfg.with_(use_sim=True, use_pair=True)
        labeled = np.unique(np.concatenate([labels.edge_users, labels.trip_users]))
        mark("load labels (E3)", t, f"{labels.n_edges:,} edges, {labels.n_triplets:,} triplets")
    elif args.e0_users:
        other = data.labels_from_store(ws, td, settings.store_url(), args.e0_users)
        labeled = np.unique(np.concatenate([other.edge_users, other.trip_users]))
    epoch_started = {"t": time.perf_counter()}

    def hook(event: str, d: dict) -> None:
        if event == "start":
            print(f"  training: {d['users']:,} users / epoch, {d['steps']} steps of {cfg.batch_size}", flush=True)
            epoch_started["t"] = time.perf_counter()
        elif event == "epoch":
            terms = ", ".join(f"{k} {d[k]:.4f}" for k in ("main", "sim", "pair") if d.get(k) is not None)
            mark(f"epoch {d['epoch']}", epoch_started["t"], f"{terms}, val NDCG@{cfg.val_k} {d['val_ndcg']:.4f}")
            epoch_started["t"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as ckpt:
        model = train(td, cfg, labels, ckpt_dir=ckpt, hook=hook).model
    for mode in ("hybrid", "sas"):
        t = time.perf_counter()
        res = evaluate(model, td, ev, mode=mode, alpha=cfg.hybrid_alpha, ks=cfg.ks, max_len=cfg.max_len,
                       keep_users=True)
        met = res["metrics"]
        mark(f"evaluate {mode}, all test users", t, f"R@20 cold {met['cold']['recall@20']:.4f} warm "
             f"{met['warm']['recall@20']:.4f}; ceiling {met['all']['cand_recall_pooled']:.3f}")
        if labeled is not None:
            sub = subset_metrics(res["per_user"], labeled)
            print(f"    on the {len(labeled):,} labeled users: R@20 cold {sub['cold']['recall@20']:.4f} "
                  f"({sub['cold']['users']} users) warm {sub['warm']['recall@20']:.4f} ({sub['warm']['users']})")
    if args.full:
        t = time.perf_counter()
        res = evaluate(model, td, ev, mode="sas", ks=cfg.ks, max_len=cfg.max_len, search=full_catalog_search(td),
                       m=td.n_items)
        mark("evaluate sas, full catalog", t, f"R@20 all {res['metrics']['all']['recall@20']:.4f}")
    rss.stop()
    what = f"E3 on run {args.run}" if args.run else "E0"
    print(f"\n### Trainer: {what} on `{args.dataset}`\n\n{os.cpu_count()} CPU cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); peak RSS {rss.peak / 2**20:.0f} MiB.\n")
    print("| step | wall s | note |\n|---|---:|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.1f} | {note} |")


if __name__ == "__main__":
    main()
