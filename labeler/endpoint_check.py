"""``coldlabel llm check``: is an endpoint reachable, does it serve the configured model, and does it answer
with JSON inside an allowed set when given a schema in its dialect? Asked before a run, not during it."""
from __future__ import annotations

import asyncio
import json

import httpx

from coldlabel.config import Settings
from coldlabel.errors import EndpointError
from labeler import builtin
from labeler.client import LLMClient, scrub

CHECK_CHOICES = ["red", "green", "blue"]
CHECK_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["colours"],
                "properties": {"colours": {"type": "array", "minItems": 1, "maxItems": 1,
                                           "items": {"type": "string", "enum": CHECK_CHOICES}}}}


def check_endpoint(settings: Settings, name: str) -> tuple[bool, list[str]]:
    """Reachability, model name, structured output. Returns (ok, verdict lines); never raises on
    endpoint trouble. Every line may quote the server (an error body, a model list, an answer): the
    endpoint's key is scrubbed from all of them."""
    ok, lines = _check(settings, name)
    key = settings.endpoint(name).api_key()
    return ok, [scrub(line, key) for line in lines]


def _check(settings: Settings, name: str) -> tuple[bool, list[str]]:
    ep = settings.endpoint(name)
    if ep.dialect == builtin.DIALECT:
        if ep.model not in builtin.KINDS:
            return False, [f"UNKNOWN BUILTIN: endpoints.{name}.model is {ep.model!r}; one of {', '.join(builtin.KINDS)}"]
        return True, [f"builtin labeler {ep.model!r}: answers in this process, no server, no LLM", "OK"]
    where = f"endpoint {name!r} at {ep.base_url}"
    lines: list[str] = []
    headers = {"Authorization": f"Bearer {ep.api_key()}"}
    try:
        resp = httpx.get(ep.base_url.rstrip("/") + "/models", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return False, [f"UNREACHABLE: {where}: {type(exc).__name__}: {exc}"]
    if resp.status_code != 200:
        return False, [f"UNREACHABLE: {where}: GET /models answered HTTP {resp.status_code} {resp.text[:200]}"]
    try:
        served = [m["id"] for m in resp.json().get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False, [f"NOT OPENAI-COMPATIBLE: {where}: GET /models did not return a model list"]
    lines.append(f"reachable: {where}")
    if ep.model not in served:
        return False, lines + [f"MODEL MISSING: {ep.model!r} is not served (served: {', '.join(served) or 'none'})"]
    lines.append(f"model: {ep.model} is served")
    quick = settings.model_copy(deep=True)
    quick.transport.max_attempts = 2
    messages = [{"role": "system", "content": "You answer with JSON only."},
                {"role": "user", "content": "Pick the colour of a clear daytime sky.\nAllowed:\n"
                 + "\n".join(f"- {c}" for c in CHECK_CHOICES) + '\nAnswer format: {"colours": ["<colour>"]}'}]

    async def ask():
        async with LLMClient.from_settings(quick, name) as client:
            return await client.complete(messages, schema=CHECK_SCHEMA, schema_name="check", constrained=True,
                                         max_tokens=48, use_cache=False)

    try:
        completion = asyncio.run(ask())
    except EndpointError as exc:
        return False, lines + [f"STRUCTURED OUTPUT FAILED: {exc}"]
    try:
        answer = json.loads(completion.text)
        values = answer["colours"]
        valid = isinstance(values, list) and values and all(v in CHECK_CHOICES for v in values)
    except (ValueError, KeyError, TypeError):
        valid = False
    how = "no schema sent (dialect plain)" if ep.dialect == "plain" else f"schema sent as the {ep.dialect} dialect"
    if not valid:
        return False, lines + [f"STRUCTURED OUTPUT FAILED ({how}): answer {completion.text[:200]!r} is not JSON "
                               f"inside the allowed set {CHECK_CHOICES}"]
    return True, lines + [f"structured output: valid JSON inside the allowed set ({how}), "
                          f"{completion.latency_ms:.0f} ms", "OK"]
