"""Our SASRec (trainer/, setting E0) against RecBole 1.2.1's SASRec on the same split, config and evaluation.

Run both sides and the table with ``bench/recbole/compare.sh DATA_ROOT EPOCHS``; the steps are::

    .venv/bin/python bench/bench_recbole.py ours --data-root R --epochs N --out R/compare
    bench/.venv-recbole/bin/python bench/bench_recbole.py recbole --data-root R --epochs N --out R/compare
    .venv/bin/python bench/bench_recbole.py table --out R/compare

``ours`` trains E0 for N epochs (no early stop) and writes ``protocol.npz``: every user's training sequence and
seen items, the strict cold items, and the evaluated users' test positives. ``recbole`` reads the export of
``coldlabel data export-recbole`` (benchmark files seqtrain / seqvalid / seqtest, so RecBole trains and
validates on exactly the trainer's fitting and validation rows) and ``protocol.npz``; it runs RecBole's own
Trainer epoch by epoch. Both sides are then evaluated after every epoch by the same function,
:func:`trainer.evaluate.evaluate` over the full catalog (every item the user has not seen in training, ``sas``
mode, tie-safe), RecBole's model through a small adapter that maps our item indices to RecBole's ids. RecBole's
own full-sort test evaluation (one row per test positive, seen items not removed) runs once at the end for
its timing and its own numbers. Both processes run torch with one thread. Peak RSS is the process maximum
(``ru_maxrss``), after loading and at the end.

The RecBole side imports only numpy/torch modules of ``trainer`` (no coldlabel settings, FAISS or store), so
it runs in the separate RecBole environment.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from trainer.dataset import EvalData, Ragged, TrainingData
from trainer.evaluate import evaluate, full_catalog_search

K = 10


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_metrics(model, td: TrainingData, ev: EvalData, max_len: int) -> tuple[dict, float]:
    """Warm / cold / all Recall and NDCG@10 over the full catalog, and the seconds it took."""
    started = time.perf_counter()
    res = evaluate(model, td, ev, mode="sas", ks=(K,), max_len=max_len, search=full_catalog_search(td),
                   m=td.n_items)
    out = {split: {"recall": res["metrics"][split][f"recall@{K}"], "ndcg": res["metrics"][split][f"ndcg@{K}"],
                   "users": res["users"][split]} for split in ("warm", "cold", "all")}
    return out, time.perf_counter() - started


def evaluated(epoch: int, args: argparse.Namespace) -> bool:
    """Test metrics after every ``--eval-every`` epochs and after the last one (a measurement, never a stop)."""
    return epoch % args.eval_every == 0 or epoch == args.epochs


def save(args: argparse.Namespace, result: dict) -> None:
    """Written after every epoch, so an interrupted long run still leaves its finished epochs."""
    result.update(threads=torch.get_num_threads(), cpus=os.cpu_count())
    tmp = args.out / f"{args.side}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out / f"{args.side}.json")


def progress(metrics: dict | None, eval_s: float | None) -> str:
    return "" if metrics is None else f"warm R@{K} {metrics['warm']['recall']:.4f} (eval {eval_s:.1f}s)"


# ---- ours -----------------------------------------------------------------------------------------

def run_ours(args: argparse.Namespace) -> dict:
    from trainer import data
    from trainer.train import build_model, train

    started = time.perf_counter()
    settings = data.load_settings(None, [f"data.root={args.data_root}"])
    ws = data.open_workspace(args.data_root, args.dataset)
    td = data.load_training_data(ws, settings)
    ev = data.load_eval_data(ws, settings)
    load_s = time.perf_counter() - started
    rss_load = peak_mib()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "protocol.npz", n_items=td.n_items, asins=np.array([it.asin for it in ws.items]),
             seq_values=td.sequences.values, seq_ptr=td.sequences.ptr, seen_values=td.seen.values,
             seen_ptr=td.seen.ptr, cold=td.cold, eval_users=ev.users, pos_values=ev.positives.values,
             pos_ptr=ev.positives.ptr)
    cfg = data.train_config(settings, epochs=args.epochs, patience=0, seed=args.seed)
    probe = build_model(cfg, td.n_items)
    epochs: list[dict] = []
    result = {"side": "ours", "load_s": load_s, "rss_after_load_mib": rss_load, "epochs": epochs,
              "train_users": int((td.fit.lengths >= 2).sum()),
              "train_targets": int(np.maximum(np.minimum(td.fit.lengths, cfg.max_len + 1) - 1, 0).sum()),
              "eval_users": int(len(ev.users)), "config": cfg.to_dict(), "torch": torch.__version__}
    clock = {"start": time.perf_counter(), "fit_end": 0.0}

    with tempfile.TemporaryDirectory() as ckpt:
        def hook(event: str, d: dict) -> None:
            if event == "start":
                clock["start"] = time.perf_counter()
            elif event == "step" and d["step"] == d["steps"]:
                clock["fit_end"] = time.perf_counter()
            elif event == "epoch":
                fit_s = clock["fit_end"] - clock["start"]
                metrics = eval_s = None
                if evaluated(d["epoch"], args):
                    probe.load_state_dict(torch.load(Path(ckpt) / "last.pt", weights_only=False)["model"])
                    metrics, eval_s = test_metrics(probe, td, ev, cfg.max_len)
                epochs.append({"epoch": d["epoch"], "train_s": fit_s, "valid_s": d["seconds"] - fit_s,
                               "loss": d["main"], "val_ndcg": d["val_ndcg"], "test": metrics, "test_eval_s": eval_s})
                print(f"ours epoch {d['epoch']}: train {fit_s:.1f}s valid {d['seconds'] - fit_s:.1f}s "
                      + progress(metrics, eval_s), flush=True)
                save(args, result | {"peak_rss_mib": peak_mib()})
                clock["start"] = time.perf_counter()
        train(td, cfg, ckpt_dir=ckpt, hook=hook)
    return result | {"peak_rss_mib": peak_mib()}


# ---- RecBole --------------------------------------------------------------------------------------

def load_protocol(path: Path) -> tuple[TrainingData, EvalData, np.ndarray]:
    z = np.load(path)
    n_items = int(z["n_items"])
    seq = Ragged(z["seq_values"], z["seq_ptr"])
    seen = Ragged(z["seen_values"], z["seen_ptr"])
    empty_pool = Ragged(np.zeros(0, dtype=np.int32), np.zeros(seq.n_rows + 1, dtype=np.int64))
    td = TrainingData(seq.n_rows, n_items, seq, seen, z["cold"], empty_pool)
    ev = EvalData(z["eval_users"], Ragged(z["pos_values"], z["pos_ptr"]), full_catalog_search(td), n_items)
    return td, ev, z["asins"]


class RecBoleScorer:
    """RecBole's SASRec behind the two calls :func:`trainer.evaluate.evaluate` makes: ``last_hidden`` on our
    left-padded tokens (item index + 1) and ``score_all`` in our item order."""

    def __init__(self, model, rb_ids: np.ndarray) -> None:
        self.model = model
        self.rb_ids = torch.as_tensor(rb_ids, dtype=torch.long)                 # our index -> RecBole id
        self.token_to_rb = torch.cat([torch.zeros(1, dtype=torch.long), self.rb_ids])

    def eval(self) -> RecBoleScorer:
        self.model.eval()
        return self

    def last_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        b, length = tokens.shape
        lengths = (tokens > 0).sum(1)
        front = (torch.arange(length)[None, :] + (length - lengths)[:, None]) % length  # RecBole pads right
        return self.model.forward(self.token_to_rb[tokens].gather(1, front), lengths)

    def score_all(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.model.item_embedding.weight[self.rb_ids].T


def recbole_config(args: argparse.Namespace, cfg: dict) -> dict:
    """Our [trainer] values in RecBole's names; what RecBole cannot match is listed in BENCHMARKS.md."""
    return {
        "n_layers": cfg["layers"], "n_heads": cfg["heads"], "hidden_size": cfg["hidden"],
        "inner_size": 4 * cfg["hidden"], "hidden_dropout_prob": cfg["dropout"], "attn_dropout_prob": cfg["dropout"],
        "hidden_act": "gelu", "layer_norm_eps": 1e-5, "initializer_range": 0.02, "loss_type": "CE",
        "MAX_ITEM_LIST_LENGTH": cfg["max_len"], "train_batch_size": cfg["batch_size"],
        "learning_rate": cfg["lr"], "weight_decay": cfg["weight_decay"], "learner": "adam",
        "train_neg_sample_args": None, "epochs": args.epochs, "eval_step": 1, "stopping_step": 10 ** 6,
        "eval_batch_size": 4096, "metrics": ["Recall", "NDCG"], "topk": [K], "valid_metric": f"NDCG@{K}",
        "seed": args.seed, "reproducibility": True, "use_gpu": False, "device": "cpu", "show_progress": False,
        "checkpoint_dir": str(args.out / "recbole-saved"), "log_wandb": False, "worker": 0, "state": "WARNING",
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
    }


def run_recbole(args: argparse.Namespace) -> dict:
    warnings.filterwarnings("ignore", category=FutureWarning)  # pandas 2.x / torch.amp notices in RecBole 1.2.1
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    ours = json.loads((args.out / "ours.json").read_text())
    export = Path(args.data_root) / args.dataset / "recbole"
    td, ev, asins = load_protocol(args.out / "protocol.npz")
    sys.argv = sys.argv[:1]  # RecBole's Config also reads `--key=value` command-line arguments
    os.chdir(args.out)  # RecBole writes log_tensorboard/ and saved/ under the working directory
    started = time.perf_counter()
    config = Config(model="SASRec", dataset=args.dataset,
                    config_file_list=[str(export / args.dataset / "sequential.yaml")],
                    config_dict=recbole_config(args, ours["config"]))
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(1)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset)
    trainer = Trainer(config, model)
    load_s = time.perf_counter() - started
    rss_load = peak_mib()
    token_id = dataset.field2token_id["item_id"]
    rb_ids = np.array([token_id[a] for a in asins], dtype=np.int64)
    scorer = RecBoleScorer(model, rb_ids)
    epochs: list[dict] = []
    result = {"side": "recbole", "load_s": load_s, "rss_after_load_mib": rss_load, "epochs": epochs,
              "train_rows": len(train_data.dataset), "native_test_rows": len(test_data.dataset),
              "config": recbole_config(args, ours["config"]) | {"checkpoint_dir": None},
              "torch": torch.__version__}
    for epoch in range(args.epochs):
        t = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        val_score, _ = trainer._valid_epoch(valid_data, show_progress=False)
        valid_s = time.perf_counter() - t
        metrics = eval_s = None
        if evaluated(epoch + 1, args):
            metrics, eval_s = test_metrics(scorer, td, ev, config["MAX_ITEM_LIST_LENGTH"])
        epochs.append({"epoch": epoch + 1, "train_s": train_s, "valid_s": valid_s, "loss": float(loss),
                       "val_ndcg": float(val_score), "test": metrics, "test_eval_s": eval_s})
        print(f"recbole epoch {epoch + 1}: train {train_s:.1f}s valid {valid_s:.1f}s " + progress(metrics, eval_s),
              flush=True)
        save(args, result | {"peak_rss_mib": peak_mib()})
    t = time.perf_counter()
    native = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    native_s = time.perf_counter() - t
    return result | {"peak_rss_mib": peak_mib(), "native_test": {k: float(v) for k, v in native.items()},
                     "native_test_s": native_s}


# ---- table ----------------------------------------------------------------------------------------

def reach(epochs: list[dict], target: float) -> tuple[int, float] | None:
    """First epoch whose warm Recall@10 is >= target, and the training seconds spent up to it."""
    spent = 0.0
    for e in epochs:
        spent += e["train_s"]
        if e["test"] is not None and e["test"]["warm"]["recall"] >= target - 1e-12:
            return e["epoch"], spent
    return None


def table(out: Path) -> str:
    a = json.loads((out / "ours.json").read_text())
    b = json.loads((out / "recbole.json").read_text())
    mean = lambda side, key: float(np.mean([e[key] for e in side["epochs"] if e[key] is not None]))  # noqa: E731
    tested = lambda side: [e for e in side["epochs"] if e["test"] is not None]  # noqa: E731
    last_a, last_b = a["epochs"][-1], b["epochs"][-1]
    na, nb = len(a["epochs"]), len(b["epochs"])
    n = f"{na}" if na == nb else f"{na} / {nb}"
    lines = [
        "| measure | ours (trainer/) | RecBole 1.2.1 | ratio RecBole / ours |",
        "|---|---:|---:|---:|",
        f"| next-item targets per epoch | {a['train_targets']:,} ({a['train_users']:,} users) | "
        f"{b['train_rows']:,} rows | |",
        f"| data load and model set-up, s | {a['load_s']:.1f} | {b['load_s']:.1f} | |",
        f"| training, s / epoch (mean of {n}) | {mean(a, 'train_s'):.1f} | {mean(b, 'train_s'):.1f} | "
        f"{mean(b, 'train_s') / mean(a, 'train_s'):.2f} |",
        f"| validation pass, s / epoch | {mean(a, 'valid_s'):.1f} | {mean(b, 'valid_s'):.1f} | "
        f"{mean(b, 'valid_s') / mean(a, 'valid_s'):.2f} |",
        f"| evaluation of all {a['eval_users']:,} test users, full catalog, our evaluator, s | "
        f"{mean(a, 'test_eval_s'):.1f} | {mean(b, 'test_eval_s'):.1f} | |",
        f"| RecBole's own full-sort test evaluation ({b['native_test_rows']:,} rows), s | — | "
        f"{b.get('native_test_s', float('nan')):.1f} | |",
        f"| peak RSS after loading, MiB | {a['rss_after_load_mib']:.0f} | {b['rss_after_load_mib']:.0f} | |",
        f"| peak RSS, whole run, MiB | {a['peak_rss_mib']:.0f} | {b['peak_rss_mib']:.0f} | "
        f"{b['peak_rss_mib'] / a['peak_rss_mib']:.2f} |",
    ]
    for split in ("warm", "cold", "all"):
        for metric in ("recall", "ndcg"):
            va, vb = last_a["test"][split][metric], last_b["test"][split][metric]
            lines.append(f"| {split} {'Recall' if metric == 'recall' else 'NDCG'}@{K} after {n} epochs | "
                         f"{va:.4f} | {vb:.4f} | |")
    best_a = max(tested(a), key=lambda e: e["test"]["warm"]["recall"])
    best_b = max(tested(b), key=lambda e: e["test"]["warm"]["recall"])
    lines.append(f"| best warm Recall@{K} over the epochs (epoch) | {best_a['test']['warm']['recall']:.4f} "
                 f"({best_a['epoch']}) | {best_b['test']['warm']['recall']:.4f} ({best_b['epoch']}) | |")
    nt = b.get("native_test", {})
    lines.append(f"| RecBole's own test numbers (all rows, seen items not removed) | | "
                 f"R@{K} {nt.get(f'recall@{K}', float('nan')):.4f}, NDCG@{K} {nt.get(f'ndcg@{K}', float('nan')):.4f} | |")
    target = min(best_a["test"]["warm"]["recall"], best_b["test"]["warm"]["recall"])
    ra, rb = reach(a["epochs"], target), reach(b["epochs"], target)
    text = "\n".join(lines) + "\n\n"
    text += f"Equal quality: the first epoch at which each reaches warm Recall@{K} >= {target:.4f} (the lower " \
            f"of the two best values):\n\n| | epochs | training s to get there |\n|---|---:|---:|\n"
    text += f"| ours | {ra[0]} | {ra[1]:.1f} |\n| RecBole | {rb[0]} | {rb[1]:.1f} |\n\n"
    text += f"Speed ratio at equal quality (RecBole training time / ours): **{rb[1] / ra[1]:.2f}**.\n\n"
    text += f"Per tested epoch (training seconds are cumulative):\n\n| epoch | ours train s | ours warm R@{K} | " \
            f"ours warm NDCG@{K} | RecBole train s | RecBole warm R@{K} | RecBole warm NDCG@{K} |\n" \
            "|---:|---:|---:|---:|---:|---:|---:|\n"

    def cells(side: dict, epoch: int) -> str:
        if epoch > len(side["epochs"]) or side["epochs"][epoch - 1]["test"] is None:
            return " | | |"
        e, spent = side["epochs"][epoch - 1], sum(x["train_s"] for x in side["epochs"][:epoch])
        return f" {spent:.1f} | {e['test']['warm']['recall']:.4f} | {e['test']['warm']['ndcg']:.4f} |"

    for epoch in range(1, max(na, nb) + 1):
        row = cells(a, epoch) + cells(b, epoch)
        if row != " | | |" * 2:
            text += f"| {epoch} |{row}\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("side", choices=("ours", "recbole", "table"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--dataset", default="beauty")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=1, help="test metrics every N epochs (and after the last)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out = args.out.absolute()
    if args.side == "table":
        print(table(args.out))
        return
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    save(args, run_ours(args) if args.side == "ours" else run_recbole(args))


if __name__ == "__main__":
    main()
