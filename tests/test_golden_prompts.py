"""Golden prompts: the real rendered stage 1-5 prompts for one fixed user of the `tiny` preset.

The `tiny` dataset is built as every test builds it (seeded synth → prepare → retrieval build), the user is
labeled through the real pipeline, and a scripted server over real HTTP answers each stage with the first
allowed values, which drives stages 2-5. What the server received — every message and response format, in
stage order — must equal ``tests/golden/prompts_tiny.txt`` byte for byte, so any change to what the model
reads shows up as a diff to review.

After a deliberate prompt change (bump ``labeler.prompts.PROMPT_VERSION``), regenerate and review the diff:

    COLDLABEL_REGEN_GOLDEN=1 PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_golden_prompts.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from coldlabel.data.workspace import Workspace
from coldlabel.store import Store
from coldlabel_testing.fake_server import FakeLLMServer
from labeler.prompts import PROMPT_VERSION
from tests.test_pipeline import label, settings_with, stage_of

GOLDEN = Path(__file__).parent / "golden" / "prompts_tiny.txt"
ORDER = ["profile", "categories", "subcategories", "items", "rerank"]


def render(bodies: list[dict]) -> str:
    """Stage order; the stage-4 calls (sent concurrently) in the order of their task line."""
    def key(body: dict) -> tuple:
        return ORDER.index(stage_of(body)), body["messages"][-1]["content"].split("\nTask:", 1)[-1]

    out = [f"# coldlabel golden prompts: tiny preset, prompt version {PROMPT_VERSION}", ""]
    for n, body in enumerate(sorted(bodies, key=key), 1):
        out.append(f"======== request {n}: stage {stage_of(body)} ========")
        for message in body["messages"]:
            out += [f"-------- {message['role']} --------", message["content"]]
        out += ["-------- response_format --------", json.dumps(body.get("response_format"), sort_keys=True), ""]
    return "\n".join(out)


def test_rendered_prompts_of_a_fixed_tiny_user_match_the_golden_file(tiny_root, tmp_path):
    user = sorted(u for u, seq in Workspace.of(tiny_root, "tiny").sequences.items() if seq)[0]
    with FakeLLMServer() as server, Store(f"sqlite:///{tmp_path / 'golden.db'}") as store:
        label(settings_with(tiny_root, server), store, user)
        got = render(server.requests)
    assert [stage_of(b) for b in server.requests].count("items") >= 2
    if os.environ.get("COLDLABEL_REGEN_GOLDEN"):
        GOLDEN.write_text(got, encoding="utf-8")
    assert got == GOLDEN.read_text(encoding="utf-8")
