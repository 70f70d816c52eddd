"""A small protocol-level OpenAI-compatible HTTP server for the test suite.

Standard library only. It speaks just enough of the OpenAI REST protocol for the real ``openai``
client: ``POST /v1/chat/completions`` (non-streaming), ``POST /v1/embeddings`` and ``GET /v1/models``. Answers are JSON
documents generated deterministically from the JSON Schema in the request's ``response_format``;
faults (HTTP errors, broken content, non-JSON bodies, hangs, connection resets) can be scripted or
drawn at random under a seed; every request and its outcome is recorded so tests can count them.

It is a test tool, never a substitute for the real llama.cpp server.

    with FakeServer() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test-fake", max_retries=0)
        fake.script = [Fault("status", status=429, retry_after=1), None]
        ...
        assert fake.count() == 2 and fake.fault_count() == 1

Prompt caching: with ``fake.prompt_cache = True`` a request whose first message (the system prompt) the fake has seen
before reports that message's tokens as ``usage.prompt_tokens_details.cached_tokens``, as OpenAI reports a cached
prefix (only from ``fake.prompt_cache_min_tokens`` tokens on); ``fake.cached_tokens`` lists what each answer reported.
Off by default: the usage then has no details, as before.

Random faults: ``fake.fault_rates = {key: probability}``, drawn per request from (seed, body, occurrence).
A key is ``kind``, ``"status:CODE"`` or ``"status:CODE:retry_after=SECONDS"``, for example
``{"status:503": 0.1, "status:429": 0.05, "status:429:retry_after=1": 0.05, "bad_body": 0.02}``: 429 with and
without a Retry-After header are separate keys. An invalid key raises ValueError when it is assigned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FakeServer",
    "body_hash",
    "default_answer",
    "embedding_of",
    "generate_instance",
    "request_schema",
]

FAULT_KINDS = (
    "status", "invalid_json", "schema_invalid", "truncated", "bad_body", "hang", "reset",
    "drip", "error_object", "refusal", "fence_whitespace", "deep_nesting", "big_number",
    "lone_surrogate", "content_parts", "content_null", "gzip_bomb", "huge_header",
)  # fmt: skip

CREATED = 1_700_000_000  # fixed "created" timestamp: answers are byte-for-byte deterministic
INVALID_JSON_CONTENT = "this is not json {"
SCHEMA_INVALID_CONTENT = '{"unexpected": 1}'
HOSTILE_CONTENT = {
    "fence_whitespace": "```json" + "\n" * 20_000,
    "deep_nesting": "[" * 100_000,
    "big_number": '{"n": ' + "9" * 10_000 + "}",
}
BAD_BODY = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("not_found_error", "model_not_found"),
    409: ("conflict_error", None),
    422: ("unprocessable_entity_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


@dataclass
class Fault:
    """One injected fault.

    kind: "status" (HTTP ``status`` with an OpenAI error body, plus Retry-After if ``retry_after`` is set),
    "invalid_json" (200, content that is not JSON), "schema_invalid" (200, JSON that violates the schema),
    "truncated" (200, content cut mid-way, finish_reason "length"), "bad_body" (200 with a text/html body
    that is not JSON at all, as a misbehaving proxy returns), "hang" (no answer for
    ``FakeServer.hang_seconds`` or until stop) or "reset" (the connection is reset after the request is read).
    Hostile or odd answers, all with status 200: "drip" (a valid answer sent one byte every
    ``FakeServer.drip_interval`` seconds), "error_object" (an ``{"error": {...}}`` body, as some gateways send),
    "refusal" (no content, the model's refusal text instead), and content that must be rejected quickly:
    "fence_whitespace" (an opening code fence followed by 20,000 newlines), "deep_nesting" (100,000 open
    brackets), "big_number" (a 10,000-digit number).
    Odd shapes and sizes, all with status 200: "lone_surrogate" (the body's JSON, ASCII-escaped, holds lone
    surrogates: appended to every "quote" string of the answer, to the model name and to the system fingerprint),
    "content_parts" (content as a list of text parts, as some OpenAI-compatible servers send), "content_null" (content
    null and no refusal), "gzip_bomb" (``Content-Encoding: gzip``: a small body that expands to
    ``FakeServer.bomb_bytes`` of whitespace before a valid answer), "huge_header" (a valid answer behind a response
    header of ``FakeServer.header_bytes``).
    """

    kind: str
    status: int = 500
    retry_after: float | None = None
    message: str = "injected fault"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")

    @classmethod
    def from_key(cls, key: str) -> Fault:
        """The fault a ``fault_rates`` key names: "kind", "status:CODE" or "status:CODE:retry_after=SECONDS"."""
        kind, *rest = key.split(":")
        fault = cls(kind)
        if not rest:
            return fault
        if kind != "status" or len(rest) > 2:
            raise ValueError(f"bad fault_rates key {key!r}: only status faults take options ('status:429')")
        try:
            fault.status = int(rest[0])
            if len(rest) == 2:
                name, sep, value = rest[1].partition("=")
                if name != "retry_after" or not sep:
                    raise ValueError
                fault.retry_after = float(value)
        except ValueError:
            raise ValueError(
                f"bad fault_rates key {key!r}: expected 'status:CODE' or 'status:CODE:retry_after=SECONDS'"
            ) from None
        return fault


def body_hash(body: Any) -> str:
    """sha256 of the canonical JSON (sort_keys, compact separators) of a request body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------
# Deterministic instance generator for JSON Schema
# --------------------------------------------------------------------------------------------------

_MAX_DEPTH = 8  # beyond this, objects get only required properties and arrays only minItems items

_FORMAT_EXAMPLES = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "fake@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def _pointer(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    target = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target


def _resolve(schema: Any, root: Any) -> Any:
    """Follow $ref (keeping sibling keywords) and merge allOf branches shallowly."""
    for _ in range(64):
        if not isinstance(schema, dict) or "$ref" not in schema:
            break
        target = _pointer(root, schema["$ref"])
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **siblings} if isinstance(target, dict) else target
    if isinstance(schema, dict) and "allOf" in schema:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for branch in schema["allOf"]:
            branch = _resolve(branch, root)
            if not isinstance(branch, dict):
                continue
            for key, value in branch.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                else:
                    merged.setdefault(key, value)
        schema = merged
    return schema


def _quote(user_text: str) -> str:
    """The first five words of the text, verbatim (so it is an exact substring)."""
    match = re.match(r"\s*((?:\S+\s+){0,4}\S+)", user_text)
    return match.group(1) if match else ""


def _infer_type(schema: dict[str, Any]) -> str:
    if any(k in schema for k in ("properties", "required", "additionalProperties", "patternProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return "string"


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_lo, bool):  # draft 4: boolean modifiers
        ex_lo = lo if ex_lo else None
        lo = None if ex_lo is not None else lo
    if isinstance(ex_hi, bool):
        ex_hi = hi if ex_hi else None
        hi = None if ex_hi is not None else hi
    if lo is not None:
        value: float = math.ceil(lo) if integer else lo
    elif ex_lo is not None:
        value = math.floor(ex_lo) + 1 if integer else ex_lo + 1
        if not integer and ex_hi is not None and value >= ex_hi:
            value = (ex_lo + ex_hi) / 2
        if not integer and hi is not None and value > hi:
            value = (ex_lo + hi) / 2
    else:
        value = 0
        if hi is not None and value > hi:
            value = math.floor(hi) if integer else hi
        if ex_hi is not None and value >= ex_hi:
            value = math.ceil(ex_hi) - 1 if integer else ex_hi - 1
    return int(value) if integer else value


def _string(schema: dict[str, Any], prop_name: str | None, user_text: str) -> str:
    min_len = schema.get("minLength", 0)
    max_len = schema.get("maxLength")
    if prop_name == "quote" and user_text.strip():
        text = _quote(user_text)
        if len(text) < min_len:  # extend with more of the message rather than padding, to stay grounded
            text = user_text.strip()[: max(min_len, len(text))]
    else:
        text = _FORMAT_EXAMPLES.get(schema.get("format", ""), "fake")
    if len(text) < min_len:
        text += "x" * (min_len - len(text))
    if max_len is not None:
        text = text[:max_len]
        if prop_name == "quote":
            text = text.rstrip() if len(text.rstrip()) >= min_len else text
    return text


def generate_instance(schema: Any, user_text: str = "", *, root: Any = None) -> Any:
    """A deterministic instance of ``schema``.

    object -> every property (recursively); enum -> first value; const -> it; anyOf/oneOf -> first branch;
    string -> "fake" (respecting min/maxLength, common formats), or for a property named "quote" the first
    five words of ``user_text``; array -> one item (respecting minItems/maxItems; distinct enum values if more
    are needed); boolean -> true; integer/number -> minimum or 0; null -> None. Local $ref and allOf are
    followed. ``pattern`` is not honoured.
    """
    return _generate(schema, root if root is not None else schema, None, user_text, 0)


def _generate(schema: Any, root: Any, prop_name: str | None, user_text: str, depth: int) -> Any:
    if schema is True or schema is None:
        return "fake"
    if schema is False or not isinstance(schema, dict):
        return None
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branch = _resolve(schema[key][0], root)
            siblings = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            merged = {**siblings, **branch} if isinstance(branch, dict) else branch
            return _generate(merged, root, prop_name, user_text, depth)

    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [t for t in kind if t != "null"]
        kind = non_null[0] if non_null else "null"
    if kind is None:
        kind = _infer_type(schema)
    minimal = depth >= _MAX_DEPTH

    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", [])
        names = [n for n in props if not minimal or n in required]
        result = {name: _generate(props[name], root, name, user_text, depth + 1) for name in names}
        extra_schema = schema.get("additionalProperties", True)
        for name in required:
            if name not in result:
                result[name] = _generate(extra_schema, root, name, user_text, depth + 1)
        if extra_schema is not False:
            i = 0
            while len(result) < schema.get("minProperties", 0):
                result.setdefault(f"extra_{i}", _generate(extra_schema, root, None, user_text, depth + 1))
                i += 1
        return result
    if kind == "array":
        min_items = schema.get("minItems", 0)
        max_items = schema.get("maxItems")
        n = min_items if minimal else max(min_items, 1)
        if max_items is not None:
            n = min(n, max_items)
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        out = [_generate(s, root, None, user_text, depth + 1) for s in (prefix or [])[:n]]
        if len(out) < n:
            item_schema = _resolve(items, root)
            enum = item_schema.get("enum") if isinstance(item_schema, dict) else None
            if enum:
                out += [enum[i % len(enum)] for i in range(n - len(out))]
            else:
                out += [_generate(item_schema, root, None, user_text, depth + 1) for _ in range(n - len(out))]
        return out
    if kind == "string":
        return _string(schema, prop_name, user_text)
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return True
    return None


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message.get("content"))
    return ""


def request_schema(body: dict[str, Any]) -> Any:
    """The JSON Schema a chat-completions request asks for, or None."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
            return fmt["json_schema"].get("schema")
        if fmt.get("type") == "json_object" and "schema" in fmt:
            return fmt["schema"]
    return body.get("json_schema")  # llama.cpp's top-level extension


def default_answer(body: dict[str, Any]) -> str:
    """The default answer content: a JSON document valid against the request's schema, or "{}"."""
    schema = request_schema(body)
    if schema is None:
        return "{}"
    return json.dumps(generate_instance(schema, _last_user_text(body)), ensure_ascii=False)


EMBEDDING_DIMS = 32


def embedding_of(text: str) -> list[float]:
    """The fake server's embedding of `text` (see FakeServer._embeddings)."""
    vector = [0.0] * EMBEDDING_DIMS
    for word in re.findall(r"\w+", text.lower()):
        vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % EMBEDDING_DIMS] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


def _words(text: str) -> int:
    return len(text.split())


def _with_surrogates(content: str) -> str:
    """The answer with a lone surrogate after every "quote" string (or after the whole text if it is not JSON)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: v + "\udc80" if k == "quote" and isinstance(v, str) else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    try:
        return json.dumps(walk(json.loads(content)), ensure_ascii=False)
    except ValueError:
        return content + "\udc80"


def _gzip_bomb(size: int, tail: bytes) -> bytes:
    """gzip of `size` spaces then `tail`: valid JSON once expanded, about a thousandth of its size on the wire."""
    out = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    block, parts, left = b" " * (1 << 20), [], size
    while left > 0:
        parts.append(out.compress(block[: min(left, len(block))]))
        left -= len(block)
    return b"".join([*parts, out.compress(tail), out.flush()])


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gives up (timeouts, our own resets) leaves a closed socket behind: expected here,
        # and printing each traceback would bury the test output.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, ValueError, OSError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; avoid 40 ms delayed-ACK stalls
    server_version = "FakeOpenAI/1.0"
    sys_version = ""
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: never log headers or bodies
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.fake._untrack(self.connection)

    # -- plumbing ---------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode("utf-8")
        else:
            try:
                data = json.dumps(payload, ensure_ascii=False).encode()
            except UnicodeEncodeError:  # lone surrogates: sent as \u escapes, legal JSON that UTF-8 cannot carry raw
                data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. its timeout fired)
            self.close_connection = True

    def _drip(self, status: int, payload: Any) -> None:
        """Headers at once, then the body one byte at a time: a server that never quite stops answering."""
        data = json.dumps(payload, ensure_ascii=False).encode()
        fake = self.server.fake
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            for i in range(len(data)):
                if fake._stopping.wait(fake.drip_interval):
                    break
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
        except OSError:  # the client gave up, as it should
            pass
        self.close_connection = True

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        err_type, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "api_error", None))
        self._send(status, {"error": {"message": message, "type": err_type, "param": None, "code": code}}, headers)

    def _reset(self) -> None:
        """Close the socket with SO_LINGER 0 so the kernel sends a real RST and nothing else."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
        except OSError:
            pass

    # -- endpoints --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        fake = self.server.fake
        if fake.route(self, "GET", path, b""):
            return
        model = {"id": fake.model_served, "object": "model", "created": CREATED, "owned_by": "fakeserver"}
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [model]})
        elif path == f"/v1/models/{fake.model_served}":
            self._send(200, model)
        else:
            self._error(404, f"no route GET {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self._read_body()
        if path == "/v1/embeddings":
            try:
                body = json.loads(raw)
            except ValueError:
                self._error(400, "request body is not valid JSON")
                return
            self.server.fake._embeddings(self, body)
            return
        if self.server.fake.route(self, "POST", path, raw):
            return
        if path != "/v1/chat/completions":
            self._error(404, f"no route POST {path}")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(400, "request body is not valid JSON")
            return
        if not isinstance(body, dict):
            self._error(400, "request body must be a JSON object")
            return
        self.server.fake._chat(self, body)


class FakeServer:
    """An OpenAI-compatible test server on 127.0.0.1 (see module docstring)."""

    hang_seconds: float = 30.0
    drip_interval: float = 1.0
    bomb_bytes: int = 50 * 1024 * 1024
    header_bytes: int = 1024 * 1024

    def __init__(
        self,
        *,
        seed: int = 0,
        latency: tuple[float, float] = (0.0, 0.0),
        model_served: str = "fake-model-1",
    ) -> None:
        self.seed = seed
        self.latency = latency
        self.model_served = model_served
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[Fault | None] = []
        self._fault_rates: dict[str, float] = {}
        # (body_hash, outcome) per chat request in arrival order; outcome is "ok", a fault kind (a "hang" that
        # outlives hang_seconds still answers, but stays a "hang"), "rejected" (streaming) or "answer_fn_error".
        self.outcomes: list[tuple[str, str]] = []
        self.answer_fn: Callable[[dict[str, Any]], str] | None = None
        # /v1/embeddings: every text embedded, in arrival order (not counted by count(): that is chat requests)
        self.embedded: list[str] = []
        self.embedding_requests = 0
        self.prompt_cache = False
        self.prompt_cache_min_tokens = 0
        self.cached_tokens: list[int] = []  # per answer sent, in order, while prompt_cache is on
        self._prefixes: set[str] = set()
        self.base_url = ""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._hash_counts: dict[str, int] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        if self._httpd is not None:
            raise RuntimeError("FakeServer already started")
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fakeserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes "hang" faults and latency sleeps
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:  # unblock handler threads waiting on idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection -------------------------------------------------------------------------------

    def count(self) -> int:
        """Number of chat-completion requests received (including faulted and rejected ones)."""
        with self._lock:
            return len(self.requests)

    def counts_by_hash(self) -> dict[str, int]:
        """body_hash(request body) -> number of times that exact body was received."""
        with self._lock:
            return dict(self._hash_counts)

    def ok_counts_by_hash(self) -> dict[str, int]:
        """body_hash(request body) -> number of normal (outcome "ok") answers sent for that body."""
        counts: dict[str, int] = {}
        with self._lock:
            for digest, kind in self.outcomes:
                if kind == "ok":
                    counts[digest] = counts.get(digest, 0) + 1
        return counts

    def fault_count(self) -> int:
        """Number of requests answered with an injected fault (scripted or drawn)."""
        with self._lock:
            return sum(kind in FAULT_KINDS for _, kind in self.outcomes)

    # -- configuration ----------------------------------------------------------------------------

    @property
    def fault_rates(self) -> dict[str, float]:
        """{fault key: probability} drawn per request when the script is empty (keys: module docstring)."""
        return self._fault_rates

    @fault_rates.setter
    def fault_rates(self, rates: dict[str, float]) -> None:
        for key in rates:
            Fault.from_key(key)  # an invalid key fails here, in the test, not later in a handler thread
        self._fault_rates = dict(rates)

    def route(self, handler: _Handler, method: str, path: str, raw: bytes) -> bool:
        """Endpoints a subclass adds (tests/batchfake.py: files and batches): True when it answered."""
        return False

    # -- internals --------------------------------------------------------------------------------

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _draw(self, purpose: str, digest: str, occurrence: int) -> random.Random:
        # Keyed by (seed, body, how many times this body has been seen): independent of request interleaving,
        # so concurrent clients see the same faults and latencies on every run.
        return random.Random(f"{purpose}:{self.seed}:{digest}:{occurrence}")

    def _choose_fault(self, digest: str, occurrence: int) -> Fault | None:
        if self.script:
            return self.script.pop(0)
        r = self._draw("fault", digest, occurrence).random()
        cumulative = 0.0
        for key, rate in sorted(self._fault_rates.items()):
            cumulative += rate
            if r < cumulative:
                return Fault.from_key(key)
        return None

    def _embeddings(self, handler: _Handler, body: Any) -> None:
        """A deterministic vector per input text: its words hashed into EMBEDDING_DIMS buckets, L2-normalised, so
        texts sharing words lie close together."""
        texts = body.get("input") if isinstance(body, dict) else None
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            handler._error(400, "input must be a string or a list of strings")
            return
        with self._lock:
            self.embedding_requests += 1
            self.embedded.extend(texts)
        data = [{"object": "embedding", "index": i, "embedding": embedding_of(t)} for i, t in enumerate(texts)]
        tokens = sum(_words(t) for t in texts)
        payload = {"object": "list", "data": data, "model": body.get("model") or self.model_served,
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
        handler._send(200, payload)

    def _cached(self, messages: list[dict[str, Any]]) -> int:
        """The tokens of the first message if it was seen before (and is long enough), else 0; it is seen now."""
        first = _message_text(messages[0].get("content")) if messages else ""
        tokens = _words(first)
        with self._lock:
            seen = first in self._prefixes
            self._prefixes.add(first)
            cached = tokens if seen and tokens >= self.prompt_cache_min_tokens else 0
            self.cached_tokens.append(cached)
        return cached

    def _chat(self, handler: _Handler, body: dict[str, Any]) -> None:
        digest = body_hash(body)
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
            occurrence = self._hash_counts.get(digest, 0)
            self._hash_counts[digest] = occurrence + 1
            index = len(self.requests)
            fault = None if body.get("stream") else self._choose_fault(digest, occurrence)
            # "rejected" (streaming) and "answer_fn_error" are neither faults nor answers.
            outcome = "rejected" if body.get("stream") else fault.kind if fault is not None else "ok"
            self.outcomes.append((digest, outcome))
            lo, hi = self.latency
            delay = self._draw("latency", digest, occurrence).uniform(lo, hi) if hi > 0 else 0.0

        if body.get("stream"):
            handler._error(400, "streaming is not supported by the fake server")
            return
        if delay > 0 and self._stopping.wait(delay):
            handler._reset()
            return
        if fault is not None and fault.kind == "reset":
            handler._reset()
            return
        if fault is not None and fault.kind == "hang":
            if self._stopping.wait(self.hang_seconds):
                handler._reset()
                return
            fault = None
        if fault is not None and fault.kind == "status":
            extra = {}
            if fault.retry_after is not None:
                extra["Retry-After"] = format(fault.retry_after, "g")
            handler._error(fault.status, fault.message, extra)
            return

        try:
            content = self.answer_fn(body) if self.answer_fn is not None else default_answer(body)
        except Exception as exc:  # a broken answer_fn should fail the test loudly, not hang the client
            with self._lock:
                self.outcomes[index - 1] = (digest, "answer_fn_error")
            handler._error(500, f"answer_fn raised {type(exc).__name__}: {exc}")
            return
        if fault is not None and fault.kind == "bad_body":
            handler._send(200, BAD_BODY, content_type="text/html")
            return
        if fault is not None and fault.kind == "error_object":
            handler._send(200, {"error": {"message": fault.message, "code": 502, "metadata": {"provider": "fake"}}})
            return
        finish_reason = "stop"
        refusal = None
        model, fingerprint = self.model_served, "fp_fake"
        if fault is not None and fault.kind == "lone_surrogate":
            content, model, fingerprint = _with_surrogates(content), model + "\udc80", fingerprint + "\ud800"
        elif fault is not None and fault.kind == "content_null":
            content = None
        elif fault is not None and fault.kind == "refusal":
            content, refusal = None, "I'm sorry, I cannot help with that request."
        elif fault is not None and fault.kind in HOSTILE_CONTENT:
            content = HOSTILE_CONTENT[fault.kind]
        elif fault is not None and fault.kind == "invalid_json":
            content = INVALID_JSON_CONTENT
        elif fault is not None and fault.kind == "schema_invalid":
            content = SCHEMA_INVALID_CONTENT
        elif fault is not None and fault.kind == "truncated":
            content = content[: max(1, len(content) // 2)]
            finish_reason = "length"

        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt_tokens = sum(_words(_message_text(m.get("content"))) for m in messages)
        usage: dict[str, Any] = {}
        if self.prompt_cache:
            usage["prompt_tokens_details"] = {"cached_tokens": self._cached(messages)}
        completion_tokens = _words(content or refusal or "")
        if fault is not None and fault.kind == "content_parts":
            half = len(content) // 2
            content = [{"type": "text", "text": content[:half]}, {"type": "text", "text": content[half:]}]
        payload = {
            "id": f"chatcmpl-fake-{index:06d}",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                **usage,
            },
        }
        kind = fault.kind if fault is not None else None
        if kind == "drip":
            handler._drip(200, payload)
        elif kind == "gzip_bomb":
            body = _gzip_bomb(self.bomb_bytes, json.dumps(payload).encode())
            handler._send(200, body, {"Content-Encoding": "gzip"})
        elif kind == "huge_header":
            handler._send(200, payload, {"X-Padding": "a" * self.header_bytes})
        else:
            handler._send(200, payload)
