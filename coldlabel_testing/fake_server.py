"""A scripted OpenAI-compatible server over real HTTP, for fault injection and load tests only.

Real model behaviour is tested against the real llama.cpp server (``tests/test_local_llm.py``); this
server exists to produce, on demand, the failures a real server produces rarely: malformed or fenced or
truncated JSON, invented ids, empty lists, wrong types, 429 + Retry-After, 500, stalls and dropped sockets.

    with FakeLLMServer(["ok", Reply("status", status=429, headers={"Retry-After": "1"}), "fenced"]) as srv:
        srv.base_url   # http://127.0.0.1:<port>/v1
        srv.requests   # every request body received, in order

The script is a list consumed one reply per chat request (then ``default``), or a function of the request
body returning a reply. ``models=Reply("status", ...)`` makes ``GET /models`` fail the same way. An error
text may hold ``{api_key}``: it becomes the bearer token the request carried, as real servers echo a key
they reject ("Incorrect API key provided: ...").

Replies are ``Reply`` objects or their kind as a string. "ok"-like replies pick values from the request's
JSON schema (the enum of allowed values), or from the prompt text when no schema was sent. Capacity mode
(``capacity=C``) serves at most C requests at a time, others wait in line, each taking
``base_latency_s + per_token_s * completion_tokens`` (for the worker-utilisation benchmark).
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

KINDS = ("ok", "fenced", "malformed", "truncated", "invented", "empty", "wrong_types", "text",
         "status", "delay", "drop")
INVENTED_IDS = ("B0FAKE0001", "B0FAKE0002")


@dataclass
class Reply:
    kind: str = "ok"
    text: str | None = None          # kind "text": the exact content; kind "status": the error message
    status: int = 200                # kind "status": the HTTP status (429, 500, ...)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0             # kind "delay": stall this long, then answer like "ok"
    k: int | None = None             # how many values to pick (default: the schema's maxItems, else 3)
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fake reply kind {self.kind!r}; expected one of {', '.join(KINDS)}")


Script = Sequence["Reply | str"] | Callable[[dict], "Reply | str | None"] | None


# ---- building answers from a request -----------------------------------------------------------

def _schema_of(body: dict) -> dict | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema")
    return fmt.get("schema")


@dataclass
class _Shape:
    field: str
    allowed: list[Any]
    k: int
    scored: bool  # items form: [{"asin": .., "score": ..}]


def _shape(body: dict) -> _Shape:
    schema = _schema_of(body)
    if schema:
        for name, prop in (schema.get("properties") or {}).items():
            if prop.get("type") != "array":
                continue
            items = prop.get("items") or {}
            k = int(prop.get("maxItems") or 3)
            if "enum" in items:
                return _Shape(name, list(items["enum"]), k, scored=False)
            inner = items.get("properties") or {}
            id_prop = next((p for p, s in inner.items() if "enum" in s and s.get("type") == "string"), None)
            if id_prop:
                return _Shape(name, list(inner[id_prop]["enum"]), k, scored="score" in inner)
    # No schema (unconstrained or plain dialect): read the prompt like a model would. Candidates are lines
    # that start with their handle (c1 "title" ...), allowed names JSON strings, one per line after "Allowed".
    text = (body.get("messages") or [{}])[-1].get("content", "") or ""
    match = re.search(r'Answer format: \{"(\w+)"', text)
    name = match.group(1) if match else "asins"
    ids = re.findall(r'^(c\d+) "', text, re.M)
    allowed = ids or [json.loads(m) for m in re.findall(r'^(".*")$', text.split("Allowed", 1)[-1], re.M)]
    return _Shape(name, allowed, 3, scored=name == "items")


def _answer(shape: _Shape, values: list[Any]) -> dict:
    if shape.scored:
        top = len(values)
        return {shape.field: [{"asin": v, "score": max(1, 5 - i)} for i, v in enumerate(values[:top])]}
    return {shape.field: values}


def content_for(reply: Reply, body: dict) -> tuple[str, str]:
    """The assistant text and finish_reason for a 200 reply."""
    if reply.kind == "text":
        return reply.text or "", reply.finish_reason or "stop"
    shape = _shape(body)
    k = reply.k or shape.k
    picks = shape.allowed[:k]
    finish = reply.finish_reason or "stop"
    if reply.kind in ("ok", "delay"):
        return json.dumps(_answer(shape, picks)), finish
    if reply.kind == "fenced":
        return ("Sure! Based on the history, here are my picks:\n```json\n"
                + json.dumps(_answer(shape, picks), indent=2) + "\n```\nLet me know if you need more."), finish
    if reply.kind == "malformed":  # single quotes, trailing comma, no closing brackets
        return "{'" + shape.field + "': [" + ", ".join(f"'{v}'" for v in picks) + ",", finish
    if reply.kind == "truncated":
        full = json.dumps(_answer(shape, picks))
        return full[: max(1, int(len(full) * 0.6))], reply.finish_reason or "length"
    if reply.kind == "invented":
        mixed: list[Any] = []
        for i, fake in enumerate(INVENTED_IDS):
            mixed += [fake] + picks[i:i + 1]
        return json.dumps(_answer(shape, mixed + picks[2:])), finish
    if reply.kind == "empty":
        return json.dumps({shape.field: []}), finish
    if reply.kind == "wrong_types":
        return json.dumps({shape.field: [None, True, ["nested"], {"note": "no id here"}]}), finish
    raise ValueError(f"reply kind {reply.kind!r} has no content")


# ---- the server -------------------------------------------------------------------------------

class FakeLLMServer:
    def __init__(self, script: Script = None, *, default: Reply | str = "ok", model: str = "fake-model",
                 capacity: int | None = None, base_latency_s: float = 0.0, per_token_s: float = 0.0,
                 completion_tokens: int | None = None, host: str = "127.0.0.1", port: int = 0,
                 models: Reply | None = None):
        self._queue: deque = deque(script) if isinstance(script, (list, tuple)) else deque()
        self._fn = script if callable(script) else None
        self.default = default
        self.model = model
        self.models = models
        self.capacity = capacity
        self.base_latency_s = base_latency_s
        self.per_token_s = per_token_s
        self.completion_tokens = completion_tokens
        self.requests: list[dict] = []       # chat request bodies, in arrival order
        self.headers: list[dict] = []        # their headers, lower-cased names (to check credentials)
        self.in_flight = 0
        self.max_in_flight = 0
        self.busy_s = 0.0                    # summed service time (capacity mode), for utilisation
        self._lock = threading.Lock()
        self._capacity = threading.Semaphore(capacity) if capacity else None
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread: threading.Thread | None = None

    # lifecycle
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> "FakeLLMServer":
        # A short poll interval: shutdown() waits for the serve loop to notice, 0.5 s by default.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def push(self, *replies: Reply | str) -> None:
        """Append replies to the script queue."""
        with self._lock:
            self._queue.extend(replies)

    def _next_reply(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            chosen: Reply | str | None = self._queue.popleft() if self._queue else None
        if chosen is None and self._fn is not None:
            chosen = self._fn(body)
        if chosen is None:
            chosen = self.default
        return Reply(chosen) if isinstance(chosen, str) else chosen

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models") and server.models is not None:
                    server._serve(self, server.models, {})
                elif self.path.rstrip("/").endswith("/models"):
                    self._send_json(200, {"object": "list",
                                          "data": [{"id": server.model, "object": "model", "owned_by": "fake"}]})
                else:
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send_json(400, {"error": {"message": "request body is not JSON"}})
                    return
                with server._lock:
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                reply = server._next_reply(body)
                server._serve(self, reply, body)

        return Handler

    def _serve(self, handler: Any, reply: Reply, body: dict) -> None:
        if reply.kind == "drop":
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if reply.kind == "status":
            token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
            message = (reply.text or f"scripted HTTP {reply.status}").replace("{api_key}", token)
            handler._send_json(reply.status, {"error": {"message": message,
                                                        "type": "fake_error"}}, reply.headers)
            return
        if reply.kind == "delay" and self._stop.wait(reply.delay_s):
            return
        text, finish = content_for(reply, body)
        completion_tokens = self.completion_tokens or max(1, len(text) // 4)
        if self._capacity is not None:
            with self._capacity:
                with self._lock:
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                took = self.base_latency_s + self.per_token_s * completion_tokens
                self._stop.wait(took)
                with self._lock:
                    self.in_flight -= 1
                    self.busy_s += took
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
        handler._send_json(200, {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, reply.headers)
