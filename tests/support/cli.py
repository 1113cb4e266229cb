"""What tests and benchmarks need to drive ``coldlabel`` as a user does: the command, and config files.

The labeling caps here keep a user at ~6 LLM calls against a scripted endpoint named ``fake``; the retrieval
settings must be the same for the build and for every command that reads the build.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from coldlabel.config import Settings, load_settings
from tests.support.datasets import build_tiny_with

COLDLABEL = [sys.executable, "-c", "from coldlabel.cli import main; main()"]

SMALL_LABELING: dict[str, dict[str, Any]] = {
    "retrieval": {"tt_epochs": 3, "candidates": 200},
    "labeler": {"endpoint": "fake", "top_k_categories": 2, "top_k_subcategories": 2,
                "max_candidates_per_subcategory": 10},
}


def merged(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Section-wise merge, later layers win key by key."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def toml_text(sections: dict[str, dict[str, Any]]) -> str:
    """Tables of scalars as TOML (a JSON string, number or boolean is also a TOML one)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def write_config(path: Path, *layers: dict[str, dict[str, Any]]) -> Path:
    """``SMALL_LABELING`` with ``layers`` on top, written as a TOML file."""
    path.write_text(toml_text(merged(SMALL_LABELING, *layers)))
    return path


def build_tiny_from(config: Path, name: str = "tiny", seed: int = 0) -> Settings:
    """synth → prepare → retrieval build of the `tiny` preset with the settings of ``config``."""
    return build_tiny_with(load_settings(config, environ={}), name, seed)
