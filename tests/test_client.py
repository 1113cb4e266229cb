"""The LLM client against the scripted fake server over real HTTP: dialects, faults, retries, cache, secrets."""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import socket
from dataclasses import dataclass

import pytest

from coldlabel.config import EndpointSettings, LabelerSettings, TransportSettings
from coldlabel.errors import EndpointRejected, RequestRejected
from coldlabel_testing.fake_server import FakeLLMServer, Reply
from labeler import prompts
from labeler.client import (
    Completion,
    EndpointError,
    LLMClient,
    RateSpacer,
    cache_key,
    parse_retry_after,
    response_format_for,
)
from labeler.prompts import CandidateView, UserView

SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"
USER = UserView("u1", ("Rose lip balm | Beauty > Skin Care > Lips",), {"profile": "likes balm"})
CANDS = [CandidateView(f"B00CAND{i:03d}", f"Balm {i}", "Beauty > Skin Care > Lips") for i in range(6)]
PROMPT = prompts.items_prompt(USER, "Beauty > Skin Care > Lips", CANDS, 3)


@dataclass
class Row:
    response_text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class DictCache:
    """The Store's get_call/put_call API, in memory."""

    def __init__(self):
        self.rows: dict[str, Row] = {}
        self.puts: list[dict] = []

    def get_call(self, key):
        return self.rows.get(key)

    def put_call(self, *, key, model, dialect, prompt_version, endpoint, request, response_text, finish_reason,
                 prompt_tokens, completion_tokens, latency_ms, replace=False):
        self.puts.append(dict(key=key, model=model, dialect=dialect, prompt_version=prompt_version,
                              endpoint=endpoint, request=request, replace=replace))
        self.rows[key] = Row(response_text, finish_reason, prompt_tokens, completion_tokens, latency_ms)


def validate(text: str) -> bool:
    """What the pipeline passes: only an answer its parser can use counts."""
    return PROMPT.parse(text).usable


def make_client(url: str, *, dialect: str = "llamacpp", name: str = "fake", attempts: int = 3,
                timeout_s: float = 5.0, cache=None, slot=None, concurrency: int = 1, model: str = "fake-model",
                key_env: str = "", backoff_s: float = 0.01, **labeler) -> LLMClient:
    endpoint = EndpointSettings(base_url=url, model=model, dialect=dialect, api_key_env=key_env,
                                concurrency=concurrency)
    return LLMClient(name, endpoint, labeler=LabelerSettings(timeout_s=timeout_s, **labeler),
                     transport=TransportSettings(max_attempts=attempts, backoff_initial_s=backoff_s,
                                                 backoff_max_s=2 * backoff_s),
                     cache=cache, slot=slot)


def ask(client: LLMClient, prompt: prompts.Prompt = PROMPT, **kw) -> Completion:
    async def go():
        async with client:
            return await client.complete(prompt.messages, schema=prompt.schema, schema_name=prompt.schema_name,
                                         prompt_version="t", **kw)
    return asyncio.run(go())


# ---- dialects -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["llamacpp", "vllm", "openai", "plain"])
def test_request_carries_the_dialects_response_format(dialect):
    with FakeLLMServer() as srv:
        ask(make_client(srv.base_url, dialect=dialect))
        body = srv.requests[0]
    assert body["model"] == "fake-model" and body["messages"] == PROMPT.messages
    assert body["temperature"] == 0.0 and body["max_tokens"] == 512
    fmt = body.get("response_format")
    if dialect == "llamacpp":
        assert fmt == {"type": "json_object", "schema": PROMPT.schema}
    elif dialect == "plain":
        assert fmt is None
    else:
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        assert fmt["json_schema"]["name"] == "coldlabel_items"
        sent = fmt["json_schema"]["schema"]
        assert sent["properties"]["asins"]["items"]["enum"] == PROMPT.answer_values
        # OpenAI strict mode rejects length keywords; vLLM keeps them.
        assert ("maxItems" in sent["properties"]["asins"]) == (dialect == "vllm")


@pytest.mark.parametrize("dialect", ["llamacpp", "vllm", "openai"])
def test_unconstrained_sends_no_schema(dialect):
    with FakeLLMServer() as srv:
        ask(make_client(srv.base_url, dialect=dialect), constrained=False)
        assert "response_format" not in srv.requests[0]


def test_unknown_dialect_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dialect 'tgi'"):
        response_format_for("tgi", {"type": "object"})


# ---- answers with bad content (the client returns them; the parser judges them) -------------------

def test_ok_answer_parses_to_allowed_ids():
    with FakeLLMServer(["ok"]) as srv:
        c = ask(make_client(srv.base_url))
    r = PROMPT.parse(c.text)
    assert r.values == PROMPT.allowed[:3] and r.used_json
    assert c.attempts == 1 and not c.cache_hit and c.finish_reason == "stop"
    assert c.prompt_tokens > 0 and c.completion_tokens > 0 and c.latency_ms > 0


@pytest.mark.parametrize("kind, values, invalid, usable", [
    ("fenced", 3, 0, True),
    ("malformed", 3, 0, True),
    ("invented", 3, 2, True),
    ("empty", 0, 0, False),
    ("wrong_types", 0, 0, False),
])
def test_content_faults_are_contained_by_the_parser(kind, values, invalid, usable):
    with FakeLLMServer([kind]) as srv:
        c = ask(make_client(srv.base_url))
    r = PROMPT.parse(c.text)
    assert len(r.values) == values and r.invalid_count == invalid and r.usable is usable
    assert set(r.values) <= set(PROMPT.allowed)
    assert c.attempts == 1  # content problems are never transport retries


def test_truncated_answer_reports_length():
    with FakeLLMServer(["truncated"]) as srv:
        c = ask(make_client(srv.base_url))
    assert c.finish_reason == "length" and c.truncated
    assert set(PROMPT.parse(c.text).values) <= set(PROMPT.allowed)


# ---- transport faults and retries ---------------------------------------------------------------------

def test_500_is_retried_then_succeeds():
    with FakeLLMServer([Reply("status", status=500), Reply("status", status=503), "ok"]) as srv:
        c = ask(make_client(srv.base_url, attempts=3))
        assert srv.request_count == 3
    assert c.attempts == 3 and PROMPT.parse(c.text).usable


def test_500_forever_gives_up_with_endpoint_error():
    with FakeLLMServer(default=Reply("status", status=500)) as srv:
        with pytest.raises(EndpointError) as err:
            ask(make_client(srv.base_url, attempts=3, name="flaky"))
        assert srv.request_count == 3
    msg = str(err.value)
    assert "endpoint 'flaky'" in msg and srv.base_url in msg and "after 3 attempts" in msg and "HTTP 500" in msg


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_are_not_retried(status):
    with FakeLLMServer(default=Reply("status", status=status)) as srv:
        with pytest.raises(EndpointError, match=f"rejected the request: HTTP {status}"):
            ask(make_client(srv.base_url, attempts=5))
        assert srv.request_count == 1


@pytest.mark.parametrize("status, hint", [
    (401, "check the API key in $COLDLABEL_TEST_KEY"),
    (403, "check the API key in $COLDLABEL_TEST_KEY"),
    (404, "check base_url and that the server serves model 'fake-model'"),
    (400, "the server refuses the request's shape: check dialect 'llamacpp'"),
])
def test_permanent_errors_fail_fast_with_what_to_fix(status, hint):
    """Finding 6: a wrong key (or model, route, request shape) is not retried like a transient error."""
    with FakeLLMServer(default=Reply("status", status=status)) as srv:
        with pytest.raises(EndpointRejected) as err:
            ask(make_client(srv.base_url, attempts=6, backoff_s=1.0, key_env="COLDLABEL_TEST_KEY"))
        assert srv.request_count == 1
    assert f"rejected the request: HTTP {status}" in str(err.value) and hint in str(err.value)


def test_a_prompt_over_the_context_length_is_this_requests_problem_only():
    too_long = Reply("status", status=400, text="This model's maximum context length is 4096 tokens. However, "
                                                "you requested 5000 tokens.")
    with FakeLLMServer(default=too_long) as srv:
        with pytest.raises(RequestRejected, match="prompt is too long"):
            ask(make_client(srv.base_url, attempts=6))
        assert srv.request_count == 1


@pytest.mark.parametrize("reply, words", [
    (Reply("status", status=429), "rate limited after 3 attempts: HTTP 429"),
    (Reply("status", status=502), "server error after 3 attempts: HTTP 502"),
    (Reply("delay", delay_s=3), "timed out after 3 attempts: timeout"),
    ("drop", "unreachable after 3 attempts"),
])
def test_transient_failures_are_worded_by_what_happened(reply, words):
    with FakeLLMServer(default=reply) as srv:
        with pytest.raises(EndpointError) as err:
            ask(make_client(srv.base_url, attempts=3, timeout_s=0.3))
    assert words in str(err.value) and not isinstance(err.value, EndpointRejected)


def test_request_deadline_bounds_attempts_timeouts_and_waits():
    """Finding 6: a stalled server costs one request at most labeler.request_deadline_s, whatever
    transport.max_attempts and labeler.timeout_s allow (here 10 attempts x 1 s + backoff)."""
    import time

    with FakeLLMServer(default=Reply("delay", delay_s=30)) as srv:
        started = time.monotonic()
        with pytest.raises(EndpointError) as err:
            ask(make_client(srv.base_url, attempts=10, timeout_s=1.0, backoff_s=0.4, request_deadline_s=2.5))
        took = time.monotonic() - started
        sent = srv.request_count
    assert took < 3.5 and 2 <= sent <= 3
    assert "timed out" in str(err.value) and "request_deadline_s=2.5s reached" in str(err.value)


@pytest.mark.parametrize("status", [408, 409])
def test_408_and_409_are_retried(status):
    with FakeLLMServer([Reply("status", status=status), "ok"]) as srv:
        assert ask(make_client(srv.base_url)).attempts == 2


def test_429_honours_retry_after(caplog):
    caplog.set_level(logging.WARNING, logger="coldlabel.client")
    with FakeLLMServer([Reply("status", status=429, headers={"Retry-After": "1"}), "ok"]) as srv:
        c = ask(make_client(srv.base_url))
        assert srv.request_count == 2
    assert c.attempts == 2
    # the wait came from the header, not from the (0.01-0.02 s) backoff
    assert "HTTP 429" in caplog.text and "retrying in 1.00s" in caplog.text


def test_parse_retry_after_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_timeout_is_retried_then_gives_up():
    with FakeLLMServer([Reply("delay", delay_s=3), "ok"]) as srv:
        c = ask(make_client(srv.base_url, timeout_s=0.5))
        assert c.attempts == 2 and srv.request_count == 2
    with FakeLLMServer(default=Reply("delay", delay_s=3)) as srv:
        with pytest.raises(EndpointError, match="after 2 attempts: timeout"):
            ask(make_client(srv.base_url, timeout_s=0.5, attempts=2))


def test_dropped_connection_is_retried_then_gives_up():
    with FakeLLMServer(["drop", "ok"]) as srv:
        assert ask(make_client(srv.base_url)).attempts == 2
    with FakeLLMServer(default="drop") as srv:
        with pytest.raises(EndpointError, match="unreachable after 3 attempts"):
            ask(make_client(srv.base_url))
        assert srv.request_count == 3


def test_nothing_listening_names_endpoint_and_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EndpointError) as err:
        ask(make_client(url, name="local", attempts=2))
    assert str(err.value) == f"endpoint 'local' at {url} unreachable after 2 attempts: ConnectError"


# ---- cache --------------------------------------------------------------------------------------------

def test_cache_hit_issues_zero_http_requests():
    cache = DictCache()
    with FakeLLMServer() as srv:
        first = ask(make_client(srv.base_url, cache=cache))
        second = ask(make_client(srv.base_url, cache=cache))
        assert srv.request_count == 1
    assert not first.cache_hit and second.cache_hit and second.attempts == 0
    assert second.text == first.text and second.key == first.key
    assert cache.puts[0]["endpoint"] == "fake" and cache.puts[0]["prompt_version"] == "t"


def test_cache_key_ignores_endpoint_but_not_model_or_dialect():
    cache = DictCache()
    with FakeLLMServer() as a, FakeLLMServer() as b:
        ask(make_client(a.base_url, name="one", cache=cache))
        assert ask(make_client(b.base_url, name="two", cache=cache)).cache_hit   # other endpoint, same model
        assert b.request_count == 0
        assert not ask(make_client(b.base_url, cache=cache, model="other-model")).cache_hit
        assert not ask(make_client(b.base_url, cache=cache, dialect="vllm")).cache_hit
        assert not ask(make_client(b.base_url, cache=cache), constrained=False).cache_hit
        assert not ask(make_client(b.base_url, cache=cache, temperature=0.7)).cache_hit
        assert b.request_count == 4


def test_cache_key_is_canonical():
    m = [{"role": "user", "content": "x"}]
    k1 = cache_key("m", "vllm", m, {"b": 1, "a": 2}, {"temperature": 0, "max_tokens": 5}, "1")
    k2 = cache_key("m", "vllm", m, {"a": 2, "b": 1}, {"max_tokens": 5, "temperature": 0}, "1")
    assert k1 == k2 and len(k1) == 64
    assert k1 != cache_key("m", "vllm", m, {"a": 2, "b": 1}, {"max_tokens": 5, "temperature": 0}, "2")


@pytest.mark.parametrize("kind", ["truncated", "empty", "wrong_types", "malformed-to-nothing"])
def test_unusable_answers_are_not_cached_and_not_hits(kind):
    """Finding 4: an answer the parser cannot use (cut off, empty, nothing allowed in it) is never stored,
    so the next ask goes to the server again."""
    reply = Reply("text", text="", finish_reason="stop") if kind == "malformed-to-nothing" else kind
    cache = DictCache()
    with FakeLLMServer([reply, "ok"]) as srv:
        first = ask(make_client(srv.base_url, cache=cache), validate=validate)
        assert cache.rows == {} and not first.cache_hit
        second = ask(make_client(srv.base_url, cache=cache), validate=validate)
        assert srv.request_count == 2 and not second.cache_hit and PROMPT.parse(second.text).usable
        assert ask(make_client(srv.base_url, cache=cache), validate=validate).cache_hit
        assert srv.request_count == 2


def test_an_unusable_row_already_cached_is_asked_again_and_replaced():
    """Rows poisoned by an older version are not replayed: a miss, then overwritten by the usable answer."""
    cache = DictCache()
    with FakeLLMServer(["empty"]) as srv:
        ask(make_client(srv.base_url, cache=cache))  # no validate: the old behaviour stored it
    key = next(iter(cache.rows))
    with FakeLLMServer() as srv:
        again = ask(make_client(srv.base_url, cache=cache), validate=validate)
        assert srv.request_count == 1 and not again.cache_hit
    assert cache.puts[-1]["replace"] is True and PROMPT.parse(cache.rows[key].response_text).usable


def test_prefetched_prompts_are_answered_from_one_lookup_and_deferred_writes_are_handed_back():
    """``prefetch_prompts`` looks every prompt up with one ``get_calls``; each ``complete_prompt`` then uses
    its row (a hit, or a known miss) without a lookup of its own. With ``cache_writes`` the usable answer's
    row is handed back for the caller's transaction instead of written."""
    class CountingCache(DictCache):
        def __init__(self):
            super().__init__()
            self.lookups: list = []

        def get_call(self, key):
            self.lookups.append(key)
            return super().get_call(key)

        def get_calls(self, keys):
            self.lookups.append(tuple(keys))
            return {k: self.rows[k] for k in keys if k in self.rows}

    other = prompts.items_prompt(USER, "Beauty > Skin Care > Eyes", CANDS, 2)
    cache = CountingCache()
    with FakeLLMServer() as srv:
        ask(make_client(srv.base_url, cache=cache), validate=validate)
        cache.lookups.clear()

        async def both(client: LLMClient, writes: list) -> list:
            async with client:
                await client.prefetch_prompts([PROMPT, other], prompt_version="t")
                return [await client.complete_prompt(p, prompt_version="t", cache_writes=writes)
                        for p in (PROMPT, other)]

        writes: list[dict] = []
        hit, miss = asyncio.run(both(make_client(srv.base_url, cache=cache), writes))
        assert srv.request_count == 2
    assert len(cache.lookups) == 1 and len(cache.lookups[0]) == 2  # one query for both, none after
    assert hit.cache_hit and not miss.cache_hit
    assert [w["key"] for w in writes] == [miss.key] and miss.key not in cache.rows  # handed back, not written
    assert writes[0]["replace"] is False and writes[0]["request"]["messages"] == other.messages


def test_failed_calls_are_not_cached():
    cache = DictCache()
    with FakeLLMServer(default=Reply("status", status=500)) as srv:
        with pytest.raises(EndpointError):
            ask(make_client(srv.base_url, cache=cache, attempts=2))
    assert cache.rows == {}


# ---- secrets ------------------------------------------------------------------------------------------

def test_api_key_is_sent_but_never_cached_logged_or_in_errors(monkeypatch, caplog):
    monkeypatch.setenv("COLDLABEL_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)  # everything, the SDK's and httpx's debug lines included
    cache = DictCache()
    script = [Reply("status", status=500), "ok",
              Reply("status", status=401, text=f"Incorrect API key provided: {SECRET}")]
    with FakeLLMServer(script) as srv:
        ask(make_client(srv.base_url, cache=cache, key_env="COLDLABEL_TEST_KEY"))
        assert srv.headers[0]["authorization"] == f"Bearer {SECRET}"
        with pytest.raises(EndpointError) as err:
            ask(make_client(srv.base_url, key_env="COLDLABEL_TEST_KEY"), constrained=False)
    assert SECRET not in json.dumps(cache.puts)
    assert SECRET not in caplog.text
    assert SECRET not in str(err.value) and "HTTP 401" in str(err.value)


@pytest.mark.parametrize("key", ["k3y", "sk-short", SECRET])
def test_a_key_of_any_length_is_scrubbed_from_endpoint_errors(monkeypatch, key):
    monkeypatch.setenv("COLDLABEL_TEST_KEY", key)
    with FakeLLMServer(default=Reply("status", status=401, text="Incorrect API key provided: {api_key}.")) as srv:
        with pytest.raises(EndpointError) as err:
            ask(make_client(srv.base_url, key_env="COLDLABEL_TEST_KEY"))
        assert srv.headers[0]["authorization"] == f"Bearer {key}"  # the server did see (and echo) it
    assert key not in str(err.value) and "Incorrect API key provided: ***" in str(err.value)


@pytest.mark.parametrize("key", ["k3y", SECRET])
def test_llm_check_scrubs_the_key_from_the_servers_error_body(monkeypatch, key):
    from coldlabel.config import load_settings
    from labeler.endpoint_check import check_endpoint

    monkeypatch.setenv("COLDLABEL_TEST_KEY", key)
    rejected = Reply("status", status=401, text="Incorrect API key provided: {api_key}. Find your key at ...")
    with FakeLLMServer(models=rejected) as srv:
        settings = load_settings(None, [f"endpoints.x.base_url={srv.base_url}", "endpoints.x.model=fake-model",
                                        "endpoints.x.api_key_env=COLDLABEL_TEST_KEY"], environ={})
        ok, lines = check_endpoint(settings, "x")
    assert not ok and "HTTP 401" in lines[-1] and "Incorrect API key provided: ***" in lines[-1]
    assert not any(key in line for line in lines)


def test_scrub_hides_short_keys_as_tokens_without_mangling_words():
    from labeler.client import scrub

    text = "key abc rejected; abcdef and tabc are words; 'abc' quoted, Bearer abc."
    assert scrub(text, "abc") == "key *** rejected; abcdef and tabc are words; '***' quoted, Bearer ***."
    assert scrub("xx" + SECRET + "yy", SECRET) == "xx***yy"  # a long key is hidden wherever it is
    assert scrub("not-needed as a word", "not-needed") == "not-needed as a word"  # the no-key placeholder
    assert scrub("anything", "") == "anything"


# ---- limits and hooks ---------------------------------------------------------------------------------

def test_concurrency_limit_per_endpoint():
    async def burst(client: LLMClient):
        async with client:
            await asyncio.gather(*[client.complete([{"role": "user", "content": f"q{i}"}]) for i in range(6)])

    with FakeLLMServer(capacity=10, base_latency_s=0.2) as srv:
        asyncio.run(burst(make_client(srv.base_url, concurrency=2)))
        assert srv.request_count == 6
        assert srv.max_in_flight == 2


def test_slot_hook_is_entered_around_every_attempt():
    entered: list[str] = []

    @contextlib.asynccontextmanager
    async def slot():
        entered.append("in")
        try:
            yield
        finally:
            entered.append("out")

    with FakeLLMServer([Reply("status", status=500), "ok"]) as srv:
        ask(make_client(srv.base_url, slot=slot))
    assert entered == ["in", "out", "in", "out"]


def test_rate_spacer_spaces_request_starts():
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def go():
        spacer = RateSpacer(120, clock=lambda: now[0], sleep=fake_sleep)  # one start per 0.5 s
        for _ in range(3):
            await spacer.wait()
        now[0] += 10  # idle for a while: no wait afterwards
        await spacer.wait()
        await RateSpacer(0, clock=lambda: now[0], sleep=fake_sleep).wait()

    asyncio.run(go())
    assert slept == pytest.approx([0.5, 1.0])
