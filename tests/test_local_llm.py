"""The real local model (SmolLM2-135M via llama-cpp-python's server) through the real client.

What is checked is the decode-time guarantee: with the enum schema every returned value is from the
allowed set. The unconstrained runs are measurements (printed), not pass/fail: a 135M model's free text is
whatever it is, and the parser's projection keeps even that inside the allowed set.
"""
from __future__ import annotations

import asyncio

import httpx
import pytest

from coldlabel.config import EndpointSettings, LabelerSettings, TransportSettings
from coldlabel_testing.fake_server import FakeLLMServer
from labeler import local_server, prompts
from labeler.client import LLMClient
from labeler.local_server import LocalServerError, gguf_path, start_local_server
from labeler.parsing import extract_json
from labeler.prompts import CandidateView, UserView
from tests.support.services import free_port

llm = pytest.mark.llm

ALIAS = "smollm2-135m-instruct"
USER = UserView("u1", (
    "Rose lip balm with shea butter | Beauty > Skin Care > Lips > Lip Balm",
    "Vitamin C brightening face serum | Beauty > Skin Care > Face > Serums",
    "Matte liquid lipstick, red | Beauty > Makeup > Lips > Lipstick",
    "Hyaluronic acid night cream | Beauty > Skin Care > Face > Moisturizers",
), {"profile": "Buys lip care and face serums.", "keywords": ["lip balm", "serum"],
    "preferred_categories": ["Beauty > Skin Care"]})
CATEGORIES = ["Beauty > Skin Care", "Beauty > Makeup", "Beauty > Hair Care", "Beauty > Fragrance",
              "Beauty > Tools & Accessories", "Beauty > Bath & Body"]
PRODUCTS = ["Tinted lip balm SPF 15", "Overnight lip mask", "Peppermint lip scrub", "Cocoa butter lip stick",
            "Honey lip oil", "Medicated lip ointment", "Vanilla lip gloss balm", "Cherry lip butter",
            "Aloe lip repair cream", "Coconut lip moisturizer", "Beeswax lip balm 4 pack", "Lip sleeping mask berry",
            "Unscented lip protectant", "Shea lip treatment", "Mint lip conditioner", "Rosehip lip serum",
            "Argan oil lip balm", "Strawberry lip scrub", "Lanolin lip cream", "Matcha lip balm"]
CANDIDATES = [CandidateView(f"B0{i:02d}LIP{i * 7 % 97:03d}", title, "Beauty > Skin Care > Lips > Lip Balm",
                            (f"Similar: {PRODUCTS[(i + 1) % 20]} | Beauty > Skin Care > Lips",) if i % 3 == 0 else ())
              for i, title in enumerate(PRODUCTS)]


def test_packaged_gguf_is_found():
    path = gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000


def test_a_running_compatible_server_is_reused_and_left_running():
    with FakeLLMServer(model=ALIAS) as fake:
        port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
        with start_local_server(port, ALIAS) as server:
            assert server.reused and server.base_url == fake.base_url
        assert fake.request_count == 0  # only /v1/models was asked
        assert httpx.get(f"{fake.base_url}/models").json()["data"][0]["id"] == ALIAS  # still running
        with pytest.raises(LocalServerError, match=f"port {port} already serves"):
            start_local_server(port, "another-model")


def test_the_embedded_server_starts_with_the_ram_prompt_cache(monkeypatch, tmp_path):
    """Interleaved users keep their shared prefix only with llama-cpp-python's state cache (bench_prompt_cache)."""
    started = []

    def popen(cmd, *a, **kw):
        started.append(cmd)
        raise OSError("not started in this test")
    monkeypatch.setattr(local_server.subprocess, "Popen", popen)
    for mb, flags in ((512, ["--cache", "true", "--cache_type", "ram", "--cache_size", str(512 << 20)]), (0, [])):
        with pytest.raises(LocalServerError, match="could not start"):
            start_local_server(free_port(), ALIAS, prompt_cache_mb=mb)
        tail = started[-1][started[-1].index("--model_alias") + 2:]
        assert tail == flags


def client_for(server) -> LLMClient:
    endpoint = EndpointSettings(base_url=server.base_url, model=ALIAS, dialect="llamacpp", concurrency=1)
    return LLMClient("local", endpoint, labeler=LabelerSettings(timeout_s=120, max_tokens=256),
                     transport=TransportSettings(max_attempts=2))


def run(server, prompt: prompts.Prompt, constrained: bool = True):
    async def go():
        async with client_for(server) as llm:
            return await llm.complete_prompt(prompt, constrained=constrained)
    completion = asyncio.run(go())
    return completion, prompt.parse(completion.text)


def raw_list(text: str, field: str) -> list:
    obj = extract_json(text)
    assert isinstance(obj, dict) and isinstance(obj.get(field), list), text
    return obj[field]


@llm
def test_server_serves_the_alias(local_llm):
    assert local_llm.base_url.endswith("/v1") and not local_llm.reused


@llm
def test_stage2_enum_schema_returns_only_allowed_categories(local_llm):
    prompt = prompts.categories_prompt(USER, CATEGORIES, 3)
    completion, result = run(local_llm, prompt)
    returned = raw_list(completion.text, "categories")
    assert returned and set(returned) <= set(CATEGORIES) and len(returned) <= 3
    assert result.usable and result.used_json and result.invalid_count == 0


@llm
def test_stage4_twenty_candidates_returns_only_candidate_handles(local_llm):
    """The schema's enum holds the prompt's handles (c1..c20); each maps back to one of the candidates."""
    prompt = prompts.items_prompt(USER, "Beauty > Skin Care > Lips > Lip Balm", CANDIDATES, 5)
    completion, result = run(local_llm, prompt)
    returned = raw_list(completion.text, "asins")
    assert set(returned) <= set(prompt.answer_values) and len(returned) == 5  # minItems = maxItems = k
    assert {prompt.item_of(h) for h in returned} <= {c.id for c in CANDIDATES}
    assert result.usable and result.invalid_count == 0
    assert completion.finish_reason == "stop"


@llm
def test_stage5_scores_are_in_range_and_ids_allowed(local_llm):
    prompt = prompts.rerank_prompt(USER, CANDIDATES[:8], 4)
    completion, result = run(local_llm, prompt)
    items = raw_list(completion.text, "items")
    assert items and all(it["asin"] in prompt.answer_values and it["score"] in (1, 2, 3, 4, 5) for it in items)
    assert {prompt.item_of(it["asin"]) for it in items} <= set(prompt.allowed)
    assert result.usable and set(result.scores) == set(result.values)


@llm
def test_stage1_profile_categories_come_from_the_enum(local_llm):
    prompt = prompts.profile_prompt(USER, CATEGORIES)
    completion, _ = run(local_llm, prompt)
    obj = extract_json(completion.text)
    assert isinstance(obj, dict) and set(obj) == {"profile", "keywords", "preferred_categories"}
    assert set(obj["preferred_categories"]) <= set(CATEGORIES)


@llm
@pytest.mark.slow
def test_constrained_vs_unconstrained_invalid_ids(local_llm, capsys):
    """Measurement: invented values with and without the enum schema, on the same prompts."""
    cases = [prompts.categories_prompt(USER, CATEGORIES, 3),
             prompts.items_prompt(USER, "Beauty > Skin Care > Lips > Lip Balm", CANDIDATES, 5),
             prompts.items_prompt(USER, "Beauty > Skin Care > Lips > Lip Balm", CANDIDATES[::-1], 5),
             prompts.rerank_prompt(USER, CANDIDATES[:8], 4)]
    rows = []
    for prompt in cases:
        for constrained in (True, False):
            completion, result = run(local_llm, prompt, constrained)
            rows.append((prompt.stage, constrained, result.invalid_count, len(result.values), result.used_json,
                         completion.finish_reason, round(completion.latency_ms)))
            if constrained:
                assert result.invalid_count == 0 and result.usable
            assert set(result.values) <= set(prompt.allowed)  # projection holds either way
    with capsys.disabled():
        print("\nstage constrained invalid_ids valid_values used_json finish latency_ms")
        for row in rows:
            print(" ".join(str(x) for x in row))
