"""The five stages against the REAL local LLM (llama.cpp server + packaged SmolLM2-135M), not a script.

SmolLM2-135M is a very small model: what this proves is the machinery around it (dialect, enum schemas,
parsing, storage, cache), not label quality. Labels must lie inside their allowed sets whatever it says.
"""
from __future__ import annotations

import pytest

from coldlabel.data.workspace import Workspace
from coldlabel.store import Store
from labeler import pipeline
from tests.support.datasets import settings_for
from tests.test_pipeline import assert_inside_allowed, label

pytestmark = pytest.mark.llm


def real_settings(root, server, *extra):
    return settings_for(root, f"endpoints.local.base_url={server.base_url}",
                        f"endpoints.local.model={server.model_alias}", "labeler.endpoint=local",
                        "labeler.timeout_s=300", *extra)


def test_real_llm_labels_inside_allowed_sets_and_cache_reuses(tiny_root, local_llm, tmp_path):
    settings = real_settings(tiny_root, local_llm)
    users = sorted(u for u, seq in Workspace.of(tiny_root, "tiny").sequences.items() if seq)[:2]
    space = pipeline.load_space(settings, "tiny")
    with Store(f"sqlite:///{tmp_path / 'real.db'}") as store:
        outcomes = [label(settings, store, u, "real", endpoint="local") for u in users]
        for out in outcomes:
            assert_inside_allowed(out, space, settings)
            assert out.counters.llm_calls >= 5 and out.counters.prompt_tokens > 0
        # With enum schemas on llama.cpp the model cannot name an item outside the candidates.
        assert sum(o.counters.invalid_ids for o in outcomes) == 0
        again = [label(settings, store, u, "real-again", endpoint="local") for u in users]
        assert [o.counters.llm_calls for o in again] == [0, 0]
        assert [sorted(e.item_id for e in o.edges) for o in again] == [sorted(e.item_id for e in o.edges) for o in outcomes]
