"""Small real datasets for tests: the `tiny` synthetic preset, prepared and retrieval-built once."""
from __future__ import annotations

import shutil
from pathlib import Path

from coldlabel.config import Settings, load_settings
from coldlabel.data import prepare, synth
from coldlabel.data.workspace import Workspace
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
