"""Small real datasets for tests: the `tiny` synthetic preset, prepared and retrieval-built once."""
from __future__ import annotations

import shutil
from pathlib import Path

from coldlabel.config import Settings, load_settings

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


def build_tiny(data_root: Path, name: str = "tiny", seed: int = 0) -> Settings:
    """synth → prepare → retrieval build, exactly as the CLI does it."""
    from coldlabel.data import synth
    from coldlabel.data.prepare import prepare
    from coldlabel.data.workspace import Workspace
    from retrieval.build import build

    settings = settings_for(data_root)
    ws = Workspace.of(data_root, name)
    synth.generate("tiny", ws.root, seed=seed)
    prepare(ws, settings.data)
    build(ws, settings)
    return settings


def copy_dataset(src_root: Path, dst_root: Path, name: str = "tiny") -> Path:
    """A private copy a test may modify (the session copy is shared)."""
    shutil.copytree(src_root / name, dst_root / name)
    return dst_root
