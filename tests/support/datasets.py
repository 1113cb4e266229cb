"""Small real datasets for tests: the `tiny` synthetic preset, prepared and retrieval-built once."""
from __future__ import annotations

import shutil
from pathlib import Path

from coldlabel.config import Settings, load_settings
from coldlabel.data import prepare, synth
from coldlabel.data.workspace import Workspace
from coldlabel.store import Edge, Store, Triplet
from retrieval import build

# Test-sized knobs: a few Two-Tower epochs and small LLM prompts; everything else is the thesis default.
TEST_OVERRIDES = [
    "retrieval.tt_epochs=10",
    "retrieval.candidates=200",
    "labeler.top_k_subcategories=2",
    "labeler.max_candidates_per_subcategory=10",
    "labeler.items_per_subcategory=3",
    "labeler.final_top_k=5",
    "labeler.history_items=8",
    "transport.backoff_initial_s=0.01",
    "transport.backoff_max_s=0.05",
]


def settings_for(data_root: Path, *extra: str) -> Settings:
    return load_settings(None, [f"data.root={data_root}", *TEST_OVERRIDES, *extra], environ={})


def build_tiny_with(settings: Settings, name: str = "tiny", seed: int = 0) -> Settings:
    """synth → prepare → retrieval build of the `tiny` preset under ``settings.data.root``, as the CLI does it."""
    ws = Workspace.of(settings.data.root, name)
    synth.generate("tiny", ws.root, seed=seed)
    prepare.prepare(ws, settings.data)
    build.build(ws, settings)
    return settings


def build_tiny(data_root: Path, name: str = "tiny", seed: int = 0) -> Settings:
    """The `tiny` dataset with the test-sized knobs of ``TEST_OVERRIDES``."""
    return build_tiny_with(settings_for(data_root), name, seed)


def copy_dataset(src_root: Path, dst_root: Path, name: str = "tiny") -> Path:
    """A private copy a test may modify (the session copy is shared)."""
    shutil.copytree(src_root / name, dst_root / name)
    return dst_root


# ---- the trainer commands on `tiny` ------------------------------------------------------------------

# Training knobs that keep a (setting, seed) on `tiny` near a second; the retrieval keys match TEST_OVERRIDES.
TRAIN_SMALL = {"trainer": {"batch_size": 64, "negatives": 20, "hidden": 32, "max_len": 20, "epochs": 2,
                           "patience": 0}}


def train_config_file(data_root: Path, path: Path) -> Path:
    """A TOML file for `coldlabel train` / `report` on a data root built by :func:`build_tiny`."""
    path.write_text(f'[data]\nroot = "{data_root}"\n[retrieval]\ntt_epochs = 10\ncandidates = 200\n[trainer]\n'
                    + "".join(f"{k} = {v}\n" for k, v in TRAIN_SMALL["trainer"].items()))
    return path


def store_label_run(settings: Settings, run_id: str, in_taste: bool, users: int = 40,
                    dataset: str = "tiny") -> str:
    """A finished labeling run in the store of ``settings``: for each of ``users`` users, pseudo edges to 3
    cold items inside (``in_taste``) or outside that user's planted taste leaves, and one triplet preferring
    the first over a warm item. Lets the trainer and its report run without an LLM."""
    ws = Workspace.of(settings.data.root, dataset)
    truth = ws.read_truth()
    leaf = {it.idx: tuple(truth["items"][it.asin]["leaf"]) for it in ws.items}
    asin = {it.idx: it.asin for it in ws.items}
    cold = sorted(ws.cold_items)
    warm = sorted(set(asin) - set(cold))
    chosen = [(u, uid) for uid, u in sorted(ws.mappings["user2idx"].items(), key=lambda x: x[1])
              if len(ws.sequences.get(u, [])) >= 2][:users]
    with Store(settings.store_url()) as store:
        store.create_run(dataset=dataset, endpoint="planted" if in_taste else "contrary", model="test",
                         prompt_version="v1", config={}, run_id=run_id)
        store.add_users(run_id, chosen)
        for u, uid in chosen:
            taste = {tuple(x) for x in truth["users"][uid]["leaves"]}
            items = [i for i in cold if (leaf[i] in taste) == in_taste][:3]
            edges = [Edge(i, asin[i], 0.8, 4, "sub") for i in items]
            triplets = [Triplet(items[0], warm[u % len(warm)], asin[items[0]], asin[warm[u % len(warm)]], 0.6)] \
                if items else []
            store.save_labels(run_id, u, edges, triplets)
            store.finish_user(run_id, u)
        store.end_run(run_id, "done")
    return run_id
