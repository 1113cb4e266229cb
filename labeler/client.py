"""The one way the labeler talks to an LLM: an async OpenAI-SDK client with dialects, retries, limits, cache.

* **Dialects** say how each server takes a JSON schema (``local-llm.md``, anchors B3/B6):
  ``vllm``/``openai`` take ``response_format={"type": "json_schema", ...}``; llama-cpp-python's server
  takes ``{"type": "json_object", "schema": ...}`` and rejects ``json_schema`` with HTTP 500;
  ``plain`` sends no constraint. ``constrained=False`` sends no schema for any dialect (for measuring).
* **Transport retries** (``tenacity``): timeouts, connection errors, 408/409/429 and 5xx, exponential
  backoff with jitter, honouring ``Retry-After``; at most ``transport.max_attempts`` attempts, and all of
  them with their waits inside ``labeler.request_deadline_s`` (each attempt also has ``labeler.timeout_s``).
  Exhausted retries raise :class:`EndpointError` naming the endpoint, the URL and what went wrong
  (unreachable, timed out, rate limited, server error), never the key. Other 4xx fail at once, without a
  retry: 401/403/404 and a refused request shape as :class:`EndpointRejected` (the run cannot go on), a
  prompt over the context length as :class:`RequestRejected` (only this user cannot).
  Format problems (bad JSON) are *not* handled here: that is the pipeline's one format retry.
* **Limits**: an ``asyncio.Semaphore`` of ``endpoint.concurrency`` and a requests-per-minute spacer, per
  client (one client per endpoint per process). ``slot`` is an optional async-context-manager factory
  entered around every HTTP attempt, for cross-process limits (the workers' hook).
* **Cache**: content-addressed (:func:`cache_key`); a hit issues no HTTP request. Only a *usable* answer is
  a hit and only a usable answer is stored: not empty, not cut off at max_tokens, and accepted by the
  caller's ``validate`` (the pipeline passes its parser), so a bad answer is asked again next time instead
  of being replayed forever. The cache object has ``get_call(key)`` / ``put_call(...)``
  (``coldlabel.store.Store``); the endpoint's name and URL are not in the key, the model and dialect are.
"""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import inspect
import json
import logging
import random
import re
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, AsyncContextManager, Callable, Protocol

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from coldlabel.config import NO_KEY, EndpointSettings, LabelerSettings, Settings, TransportSettings
from coldlabel.errors import EndpointError, EndpointRejected, RequestRejected

log = logging.getLogger("coldlabel.client")

RETRY_STATUS = {408, 409, 429}
MAX_RETRY_AFTER_S = 300.0  # a server asking for more than this is treated as asking for this
# A 400/422 that says the prompt is too long is about this request, not about the endpoint.
_TOO_LONG = re.compile(r"context length|context window|maximum context|too many tokens|too long", re.I)
_JSON_HEADERS = {"Content-Type": "application/json"}  # the body is posted as ready-made JSON bytes
# Keywords OpenAI strict mode does not accept; stripped for the ``openai`` dialect only.
_OPENAI_UNSUPPORTED = ("minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum")


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    attempts: int           # HTTP attempts made (0 for a cache hit)
    cache_hit: bool
    key: str = ""           # the cache key, so callers can link parsed rows to the raw call

    @property
    def truncated(self) -> bool:
        """The model hit max_tokens: the JSON is probably cut off (vLLM #8350; curator treats it as failure)."""
        return self.finish_reason == "length"


class CallCache(Protocol):
    def get_call(self, key: str) -> Any: ...
    def put_call(self, *, key: str, model: str, dialect: str, prompt_version: str, endpoint: str,
                 request: dict, response_text: str, finish_reason: str | None, prompt_tokens: int,
                 completion_tokens: int, latency_ms: float, replace: bool) -> Any: ...


# ---- pure helpers ------------------------------------------------------------------------------

def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(model: str, dialect: str, messages: list[dict], schema: dict | None, params: dict,
              prompt_version: str) -> str:
    """sha256 over everything that decides the answer (anchors B1: curator's fingerprint), nothing else."""
    payload = {"model": model, "dialect": dialect, "messages": messages, "schema": schema,
               "params": params, "prompt_version": prompt_version}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def scrub(text: str, key: str) -> str:
    """``text`` with every occurrence of the API key replaced by ``***``, whatever the key's length.

    A key of 8 characters or more is replaced wherever it occurs. A shorter one is replaced where it stands
    as a token of its own (not inside a longer run of letters and digits), so a 3-character key is still
    hidden in "Incorrect API key provided: k3y" without turning every word that contains it into ``***``.
    """
    if not key or key == NO_KEY or not text:
        return text
    if len(key) >= 8:
        return text.replace(key, "***")
    return re.sub(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", "***", text)


def _strip_keywords(schema: Any, names: tuple[str, ...]) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_keywords(v, names) for k, v in schema.items() if k not in names}
    if isinstance(schema, list):
        return [_strip_keywords(v, names) for v in schema]
    return schema


def response_format_for(dialect: str, schema: dict | None, name: str = "answer") -> dict | None:
    """The ``response_format`` body field each dialect understands, or None for no constraint."""
    if schema is None or dialect == "plain":
        return None
    if dialect == "llamacpp":
        return {"type": "json_object", "schema": schema}
    if dialect == "openai":
        schema = _strip_keywords(schema, _OPENAI_UNSUPPORTED)
    if dialect in ("vllm", "openai"):
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    raise ValueError(f"unknown dialect {dialect!r} (expected vllm, llamacpp, openai or plain)")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _retry_after(exc: BaseException) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: connection trouble, timeouts, 408/409/429 and server errors."""
    if isinstance(exc, (openai.APIConnectionError, TimeoutError)):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUS or exc.status_code >= 500
    return False


def what_failed(exc: BaseException) -> str:
    """A transient failure in words: unreachable, timed out, rate limited or server error."""
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable"
    if isinstance(exc, openai.APIStatusError):
        return {429: "rate limited", 408: "timed out"}.get(exc.status_code, "server error")
    return "failed"


def usable_answer(text: str, finish_reason: str | None, validate: Callable[[str], bool] | None = None) -> bool:
    """Worth caching (and a cache hit): not empty, not cut off at max_tokens, accepted by ``validate``."""
    return bool(text.strip()) and finish_reason != "length" and (validate is None or bool(validate(text)))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return type(cause).__name__ if cause is not None else "connection error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} {str(exc.message)[:200]}"
    return f"{type(exc).__name__}: {exc}"


class RateSpacer:
    """At most ``per_minute`` request starts per minute, evenly spaced (0 = unlimited)."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep):
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = self._clock()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await self._sleep(delay)


# ---- the client ---------------------------------------------------------------------------------

class LLMClient:
    """One endpoint, one async client. Use ``async with LLMClient.from_settings(s) as llm: ...``."""

    def __init__(self, name: str, endpoint: EndpointSettings, *, labeler: LabelerSettings | None = None,
                 transport: TransportSettings | None = None, cache: CallCache | None = None,
                 slot: Callable[[], AsyncContextManager[Any]] | None = None):
        self.name = name
        self.endpoint = endpoint
        self.labeler = labeler or LabelerSettings()
        self.transport = transport or TransportSettings()
        self.cache = cache
        self.slot = slot
        self._key = endpoint.api_key()
        self._sdk = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=self._key, max_retries=0,
                                       timeout=self.labeler.timeout_s)
        self._semaphore = asyncio.Semaphore(endpoint.concurrency)
        self._spacer = RateSpacer(endpoint.requests_per_minute)
        self.http_requests = 0  # attempts actually sent, for stats
        self._prefetched: dict[str, Any] = {}  # key -> cached row (or None: not cached), see prefetch_prompts

    @classmethod
    def from_settings(cls, settings: Settings, endpoint_name: str | None = None, *,
                      cache: CallCache | None = None,
                      slot: Callable[[], AsyncContextManager[Any]] | None = None) -> "LLMClient":
        name = endpoint_name or settings.labeler.endpoint
        return cls(name, settings.endpoint(name), labeler=settings.labeler, transport=settings.transport,
                   cache=cache, slot=slot)

    @property
    def where(self) -> str:
        return f"endpoint {self.name!r} at {self.endpoint.base_url}"

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._sdk.close()

    def _scrub(self, text: str) -> str:
        return scrub(text, self._key)

    def build_request(self, messages: list[dict], *, schema: dict | None, schema_name: str = "answer",
                      constrained: bool | None = None, temperature: float | None = None,
                      max_tokens: int | None = None) -> dict:
        """The chat-completions body (without credentials) that :meth:`complete` sends."""
        constrained = self.labeler.constrained if constrained is None else constrained
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": messages,
            "temperature": self.labeler.temperature if temperature is None else temperature,
            "max_tokens": self.labeler.max_tokens if max_tokens is None else max_tokens,
        }
        fmt = response_format_for(self.endpoint.dialect, schema if constrained else None, schema_name)
        if fmt is not None:
            body["response_format"] = fmt
        return body

    def _body_and_key(self, messages: list[dict], *, schema: dict | None, schema_name: str = "answer",
                      constrained: bool | None = None, temperature: float | None = None,
                      max_tokens: int | None = None, prompt_version: str = "") -> tuple[dict, str]:
        body = self.build_request(messages, schema=schema, schema_name=schema_name, constrained=constrained,
                                  temperature=temperature, max_tokens=max_tokens)
        params = {"temperature": body["temperature"], "max_tokens": body["max_tokens"]}
        return body, cache_key(self.endpoint.model, self.endpoint.dialect, messages, body.get("response_format"),
                               params, prompt_version)

    async def prefetch_prompts(self, prompts: list[Any], *, prompt_version: str = "") -> None:
        """Look several prompts up in the cache with one query (a user's stage-4 calls, asked together), so
        that :meth:`complete_prompt` of each finds its row without a query of its own. Only the last batch is
        kept; a row is used once. Without a cache that has ``get_calls`` this does nothing."""
        get_calls = getattr(self.cache, "get_calls", None)
        if get_calls is None or not prompts:
            return
        keys = [self._body_and_key(p.messages, schema=p.schema, schema_name=p.schema_name,
                                   prompt_version=prompt_version)[1] for p in prompts]
        rows = await _maybe_await(get_calls(keys))
        self._prefetched = {key: rows.get(key) for key in keys}

    async def complete(self, messages: list[dict], *, schema: dict | None = None, schema_name: str = "answer",
                       constrained: bool | None = None, temperature: float | None = None,
                       max_tokens: int | None = None, prompt_version: str = "",
                       use_cache: bool = True, validate: Callable[[str], bool] | None = None,
                       cache_writes: list[dict] | None = None) -> Completion:
        """One chat completion: from the cache when the same request was answered usably before, else over
        HTTP. ``validate(text)`` says whether an answer is usable (see :func:`usable_answer`).
        ``cache_writes``: a usable answer's cache row is appended there (``put_call``'s keyword arguments)
        instead of written at once, for a caller that stores it with its own write (the pipeline, with the
        stage it belongs to: one transaction instead of two)."""
        body, key = self._body_and_key(messages, schema=schema, schema_name=schema_name, constrained=constrained,
                                       temperature=temperature, max_tokens=max_tokens, prompt_version=prompt_version)
        stale = False  # a stored answer that is not usable: asked again, and replaced by a usable one
        if self.cache is not None and use_cache:
            if key in self._prefetched:
                row = self._prefetched.pop(key)
            else:
                row = await _maybe_await(self.cache.get_call(key))
            if row is not None and usable_answer(row.response_text, row.finish_reason, validate):
                return Completion(row.response_text, row.finish_reason, row.prompt_tokens or 0,
                                  row.completion_tokens or 0, row.latency_ms or 0.0, attempts=0,
                                  cache_hit=True, key=key)
            stale = row is not None
        completion = await self._send(body)
        completion.key = key
        if self.cache is not None and use_cache and usable_answer(completion.text, completion.finish_reason,
                                                                  validate):
            write = dict(key=key, model=self.endpoint.model, dialect=self.endpoint.dialect,
                         prompt_version=prompt_version, endpoint=self.name, request=body,
                         response_text=completion.text, finish_reason=completion.finish_reason,
                         prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                         latency_ms=completion.latency_ms, replace=stale)
            if cache_writes is not None:
                cache_writes.append(write)
            else:
                await _maybe_await(self.cache.put_call(**write))
        return completion

    async def complete_prompt(self, prompt: Any, *, messages: list[dict] | None = None,
                              constrained: bool | None = None, prompt_version: str = "",
                              use_cache: bool = True, validate: Callable[[str], bool] | None = None,
                              cache_writes: list[dict] | None = None) -> Completion:
        """Send a ``labeler.prompts.Prompt`` (its messages, or ``messages`` for a format retry); only an
        answer its parser can use (``validate``, by default the prompt's parser) is cached. The pipeline asks
        every stage this way (``labeler.builtin.Answerer``)."""
        return await self.complete(messages or prompt.messages, schema=prompt.schema,
                                   schema_name=prompt.schema_name, constrained=constrained,
                                   prompt_version=prompt_version, use_cache=use_cache,
                                   validate=validate or (lambda text: prompt.parse(text).usable),
                                   cache_writes=cache_writes)

    def _wait(self, state: RetryCallState, deadline_at: float | None = None) -> float:
        """Retry-After when the server gave one, else full-jitter exponential backoff; never past the
        request's deadline."""
        exc = state.outcome.exception() if state.outcome else None
        hinted = _retry_after(exc) if exc is not None else None
        if hinted is not None:
            wait = min(hinted, MAX_RETRY_AFTER_S)
        else:
            t = self.transport
            wait = random.uniform(0, min(t.backoff_max_s, t.backoff_initial_s * 2 ** (state.attempt_number - 1)))
        if deadline_at is not None:
            wait = min(wait, max(0.0, deadline_at - time.monotonic()))
        return wait

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s: attempt %d failed (%s); retrying in %.2fs", self.where, state.attempt_number,
                    self._scrub(_describe(exc)) if exc else "?",
                    state.next_action.sleep if state.next_action else 0.0)

    def _rejected(self, exc: openai.APIStatusError) -> EndpointError:
        """A refusal that no retry can change, in words that say what to fix."""
        detail = self._scrub(_describe(exc))
        msg = f"{self.where} rejected the request: {detail}"
        if exc.status_code == 413 or (exc.status_code in (400, 422) and _TOO_LONG.search(str(exc.message))):
            return RequestRejected(msg + " (this user's prompt is too long for the model)")
        hint = {401: f"check the API key in ${self.endpoint.api_key_env or '<api_key_env not set>'}",
                403: f"check the API key in ${self.endpoint.api_key_env or '<api_key_env not set>'} "
                     "and its permissions",
                404: f"check base_url and that the server serves model {self.endpoint.model!r}"}.get(
            exc.status_code, f"the server refuses the request's shape: check dialect {self.endpoint.dialect!r}")
        return EndpointRejected(f"{msg}; {hint}")

    async def _send(self, body: dict) -> Completion:
        attempts = 0
        # Serialised once for all attempts, and posted as it is: ``chat.completions.create`` would walk the
        # messages through the SDK's TypedDict transform and build pydantic models of the answer on every
        # call (about a third of the client's CPU per request), for a body we have already built and an
        # answer we read three fields of. The SDK still sends it (auth, headers, timeouts, status errors).
        # llama.cpp's json_object+schema is sent verbatim this way too, never validated against OpenAI's types.
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        deadline_s = self.labeler.request_deadline_s
        margin = min(1.0, deadline_s / 10)  # an attempt with less time than this left is not worth starting
        clock: dict[str, float] = {}  # "deadline": set when the first attempt is sent (not while queueing)

        def stop(state: RetryCallState) -> bool:
            if state.attempt_number >= self.transport.max_attempts:
                return True
            deadline_at = clock.get("deadline")
            return deadline_at is not None and time.monotonic() + state.upcoming_sleep >= deadline_at - margin

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop,
            wait=lambda state: self._wait(state, clock.get("deadline")),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    async with AsyncExitStack() as stack:
                        if self.slot is not None:
                            await stack.enter_async_context(self.slot())
                        await stack.enter_async_context(self._semaphore)
                        await self._spacer.wait()
                        self.http_requests += 1
                        started = time.perf_counter()
                        deadline_at = clock.setdefault("deadline", time.monotonic() + deadline_s)
                        budget = max(0.001, min(self.labeler.timeout_s, deadline_at - time.monotonic()))
                        # The outer timeout bounds the whole attempt (a server trickling bytes resets httpx's).
                        async with asyncio.timeout(budget):
                            raw = await self._sdk.post("/chat/completions", cast_to=bytes, content=content,
                                                       options={"timeout": budget, "headers": _JSON_HEADERS})
                        latency_ms = (time.perf_counter() - started) * 1000
        except (openai.APIError, TimeoutError) as exc:
            if isinstance(exc, openai.APIStatusError) and not is_transient(exc):
                raise self._rejected(exc) from exc
            detail = self._scrub(_describe(exc))
            msg = f"{self.where} {what_failed(exc)} after {attempts} attempts: {detail}"
            if attempts < self.transport.max_attempts:
                msg += f" (request deadline labeler.request_deadline_s={deadline_s:g}s reached)"
            raise EndpointError(msg) from exc
        text, finish_reason, usage = self._read_answer(raw)
        return Completion(
            text=text,
            finish_reason=finish_reason,
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            latency_ms=latency_ms,
            attempts=attempts,
            cache_hit=False,
        )

    def _read_answer(self, raw: bytes) -> tuple[str, str | None, dict]:
        """(text, finish_reason, usage) of a chat-completions answer; EndpointError when it is not one."""
        try:
            answer = json.loads(raw)
        except ValueError:
            raise EndpointError(f"{self.where} answered with something that is not JSON: "
                                f"{self._scrub(raw[:200].decode('utf-8', 'replace'))!r}") from None
        choices = answer.get("choices") if isinstance(answer, dict) else None
        if not choices:
            raise EndpointError(f"{self.where} answered without choices")
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        usage = answer.get("usage") or {}
        return (str(message.get("content") or ""), choice.get("finish_reason"),
                usage if isinstance(usage, dict) else {})


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
