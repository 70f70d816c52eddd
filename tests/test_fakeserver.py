"""Tests for the OpenAI-compatible fake server, driven by the real ``openai`` client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request

import jsonschema
import openai
import pytest

from fakeserver import (
    INVALID_JSON_CONTENT,
    FakeServer,
    Fault,
    body_hash,
    generate_instance,
)

API_KEY = "sk-test-fake"

CODING_SCHEMA = {
    "$defs": {
        "Assignment": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "enum": ["trust", "cost", "access"]},
                "quote": {"type": "string", "minLength": 1, "maxLength": 40},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "rationale": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]},
            },
            "required": ["code", "quote", "confidence", "rationale"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {
        "assignments": {"type": "array", "items": {"$ref": "#/$defs/Assignment"}, "minItems": 1, "maxItems": 5},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 1},
        "flagged": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 3},
        "note": {"type": ["string", "null"]},
        "nothing": {"type": "null"},
    },
    "required": ["assignments", "tags", "flagged", "n", "note", "nothing"],
    "additionalProperties": False,
}

SEGMENT = "I never trusted the clinic after they lost my records twice."


def _messages(text: str = SEGMENT) -> list[dict]:
    return [
        {"role": "system", "content": "You are a careful qualitative coder."},
        {"role": "user", "content": text},
    ]


def _json_schema_format(schema: dict = CODING_SCHEMA) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "coding", "schema": schema, "strict": True}}


@pytest.fixture
def fake():
    with FakeServer(seed=7) as server:
        yield server


@pytest.fixture
def client(fake):
    return openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=10)


def _ask(client, **kwargs):
    kwargs.setdefault("model", "fake-model-1")
    kwargs.setdefault("messages", _messages())
    kwargs.setdefault("response_format", _json_schema_format())
    return client.chat.completions.create(**kwargs)


def test_json_schema_answer_validates(fake, client):
    resp = _ask(client)
    assert resp.object == "chat.completion"
    assert resp.model == "fake-model-1"
    assert resp.system_fingerprint == "fp_fake"
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    answer = json.loads(choice.message.content)
    jsonschema.validate(answer, CODING_SCHEMA)
    assert answer["assignments"][0]["code"] == "trust"
    assert answer["tags"] == ["a"]
    assert answer["n"] == 3
    assert resp.usage.completion_tokens == len(choice.message.content.split())
    assert resp.usage.prompt_tokens == len(SEGMENT.split()) + 6
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_quote_is_grounded_in_last_user_message(client):
    answer = json.loads(_ask(client).choices[0].message.content)
    quote = answer["assignments"][0]["quote"]
    assert quote == "I never trusted the clinic"
    assert quote in SEGMENT


def test_json_object_with_schema_validates(client):
    schema = {"type": "object", "properties": {"label": {"type": "string", "maxLength": 2}}, "required": ["label"]}
    resp = _ask(client, response_format={"type": "json_object", "schema": schema})
    answer = json.loads(resp.choices[0].message.content)
    jsonschema.validate(answer, schema)
    assert len(answer["label"]) <= 2


def test_no_schema_gives_empty_object(client):
    resp = _ask(client, response_format=openai.NOT_GIVEN)
    assert resp.choices[0].message.content == "{}"


def test_script_rate_limit_then_invalid_json_then_valid(fake, client):
    fake.script = [Fault("status", status=429, retry_after=1), Fault("invalid_json"), None]
    with pytest.raises(openai.RateLimitError) as excinfo:
        _ask(client)
    assert excinfo.value.status_code == 429
    assert excinfo.value.response.headers["retry-after"] == "1"
    assert excinfo.value.body["message"] == "injected fault"
    assert excinfo.value.code == "rate_limit_exceeded"

    content = _ask(client).choices[0].message.content
    assert content == INVALID_JSON_CONTENT
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)

    jsonschema.validate(json.loads(_ask(client).choices[0].message.content), CODING_SCHEMA)
    assert fake.script == []
    assert fake.count() == 3


def test_status_500_is_internal_server_error(fake, client):
    fake.script = [Fault("status", message="boom")]
    with pytest.raises(openai.InternalServerError, match="boom"):
        _ask(client)


def test_schema_invalid_content(fake, client):
    fake.script = [Fault("schema_invalid")]
    answer = json.loads(_ask(client).choices[0].message.content)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(answer, CODING_SCHEMA)


def test_truncated_has_finish_reason_length(fake, client):
    fake.script = [Fault("truncated")]
    resp = _ask(client)
    assert resp.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.choices[0].message.content)


def test_counts_and_hashes(fake, client):
    _ask(client)
    _ask(client)
    _ask(client, messages=_messages("Something else entirely."))
    assert fake.count() == 3
    assert len(fake.requests) == 3
    first = fake.requests[0]
    assert first["model"] == "fake-model-1"
    assert first["messages"][1]["content"] == SEGMENT
    counts = fake.counts_by_hash()
    assert sorted(counts.values()) == [1, 2]
    assert counts[body_hash(first)] == 2
    assert body_hash(first) == body_hash(json.loads(json.dumps(first, sort_keys=True)))


def test_headers_recorded_with_auth(fake, client):
    _ask(client)
    assert fake.headers[0]["authorization"] == f"Bearer {API_KEY}"
    assert fake.headers[0]["content-type"] == "application/json"


def test_reset_raises_connection_error(fake, client):
    fake.script = [Fault("reset")]
    with pytest.raises(openai.APIConnectionError) as excinfo:
        _ask(client)
    assert not isinstance(excinfo.value, openai.APITimeoutError)
    assert fake.count() == 1
    jsonschema.validate(json.loads(_ask(client).choices[0].message.content), CODING_SCHEMA)


def test_hang_times_out_and_stop_is_prompt():
    server = FakeServer().start()
    try:
        server.script = [Fault("hang")]
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            _ask(client)
        assert time.monotonic() - t0 < 10  # the client timeout fired, not the 30 s hang
    finally:
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 10  # well under the 30 s hang: stop() does not wait for it


def test_stop_is_prompt_while_hang_in_flight():
    server = FakeServer().start()
    server.script = [Fault("hang")]
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=20)
    errors = []

    def call():
        try:
            _ask(client)
        except openai.APIConnectionError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + 5
    while server.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 10  # well under the 30 s hang: stop() does not wait for it
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert len(errors) == 1


def test_stream_rejected(fake, client):
    with pytest.raises(openai.BadRequestError):
        _ask(client, stream=True)
    assert fake.count() == 1


def test_models_endpoint(fake, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["fake-model-1"]
    with urllib.request.urlopen(f"{fake.base_url}/models", timeout=5) as resp:
        assert json.load(resp)["data"][0]["id"] == "fake-model-1"


def test_answer_fn_overrides_generator(fake, client):
    fake.answer_fn = lambda body: json.dumps({"echo": body["messages"][-1]["content"]})
    assert json.loads(_ask(client).choices[0].message.content) == {"echo": SEGMENT}
    fake.script = [Fault("truncated")]
    assert _ask(client).choices[0].finish_reason == "length"


def _outcomes(seed: int, n: int = 30) -> list[str]:
    out = []
    with FakeServer(seed=seed) as server:
        server.fault_rates = {"status:503": 0.2, "invalid_json": 0.2, "truncated": 0.1}
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=5)
        for i in range(n):
            try:
                resp = _ask(client, messages=_messages(f"segment {i % 10}"))
                content = resp.choices[0].message.content
                if resp.choices[0].finish_reason == "length":
                    out.append("truncated")
                elif content == INVALID_JSON_CONTENT:
                    out.append("invalid_json")
                else:
                    out.append("ok")
            except openai.InternalServerError as exc:
                assert exc.status_code == 503
                out.append("503")
    return out


def test_fault_rates_are_deterministic_under_seed():
    a = _outcomes(seed=1)
    assert a == _outcomes(seed=1)
    assert {"ok", "503", "invalid_json"} <= set(a)
    assert a != _outcomes(seed=2)


def test_latency():
    with FakeServer(latency=(0.2, 0.3)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=5)
        t0 = time.monotonic()
        _ask(client)
        assert time.monotonic() - t0 >= 0.2  # the latency was applied


def test_async_client_concurrent(fake):
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=10) as aclient:
            tasks = [
                aclient.chat.completions.create(
                    model="fake-model-1", messages=_messages(f"segment {i}"), response_format=_json_schema_format()
                )
                for i in range(20)
            ]
            return [r.choices[0].message.content for r in await asyncio.gather(*tasks)]

    contents = asyncio.run(run())
    for content in contents:
        jsonschema.validate(json.loads(content), CODING_SCHEMA)
    assert fake.count() == 20
    assert len(fake.counts_by_hash()) == 20


def test_retries_reuse_same_body(fake):
    fake.script = [Fault("status", status=503, retry_after=0.01), Fault("reset")]
    client = openai.OpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=2, timeout=5)
    jsonschema.validate(json.loads(_ask(client).choices[0].message.content), CODING_SCHEMA)
    assert fake.count() == 3
    assert list(fake.counts_by_hash().values()) == [3]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "minLength": 10, "maxLength": 12},
        {"type": "integer", "exclusiveMinimum": 4, "maximum": 9},
        {"type": "number", "maximum": -2.5},
        {"type": "integer", "exclusiveMaximum": 0},
        {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 2, "uniqueItems": True},
        {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
        {"type": "array", "prefixItems": [{"type": "boolean"}, {"const": 3}], "minItems": 2},
        {"oneOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"type": "null"}]},
        {"allOf": [{"properties": {"x": {"type": "string"}}, "required": ["x"]}, {"required": ["y"]}]},
        {"type": "object", "required": ["k"], "additionalProperties": {"type": "integer"}, "minProperties": 3},
        {"type": "string", "format": "date-time"},
        {
            "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}},
            "$ref": "#/$defs/node",
        },
        {"type": "object", "properties": {"quote": {"type": "string", "maxLength": 9}}},
        True,
        {},
    ],
)
def test_generator_validates(schema):
    jsonschema.validate(generate_instance(schema, "  Hello   world, this is\na transcript line."), schema)


def test_generator_quote_is_verbatim_prefix():
    text = "  Hello   world, this is\na transcript line."
    schema = {"type": "object", "properties": {"quote": {"type": "string"}}}
    assert generate_instance(schema, text) == {"quote": "Hello   world, this is\na"}
    short = {"type": "object", "properties": {"quote": {"type": "string", "maxLength": 9}}}
    assert generate_instance(short, text) == {"quote": "Hello   w"}


def test_unknown_fault_kind_rejected():
    with pytest.raises(ValueError):
        Fault("explode")


# --- bad bodies, outcomes and fault keys ---------------------------------------------------------------------


def _post_raw(fake, body: dict) -> tuple[int, str, str]:
    request = urllib.request.Request(
        f"{fake.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


def test_bad_body_is_200_html_not_json(fake, client):
    fake.script = [Fault("bad_body")]
    status, content_type, text = _post_raw(fake, {"model": "m", "messages": _messages()})
    assert (status, content_type) == (200, "text/html")
    assert "502 Bad Gateway" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    # the real client does not turn it into a chat completion: with a non-JSON content type and without
    # strict response validation (the default, as in qualcode's client) it hands back the body as a string,
    # which is why qualcode checks every response for `choices`
    fake.script = [Fault("bad_body")]
    resp = _ask(client)
    assert isinstance(resp, str) and resp == text
    jsonschema.validate(json.loads(_ask(client).choices[0].message.content), CODING_SCHEMA)


def test_outcomes_record_every_request_in_order(fake, client):
    fake.script = [Fault("status", status=503), Fault("bad_body"), None, Fault("invalid_json")]
    with pytest.raises(openai.InternalServerError):
        _ask(client)
    for _ in range(3):
        with contextlib.suppress(openai.APIError):
            _ask(client)
    _ask(client, messages=_messages("Another segment."))
    with pytest.raises(openai.BadRequestError):
        _ask(client, stream=True)
    first, other, streamed = (body_hash(fake.requests[i]) for i in (0, 4, 5))
    assert fake.outcomes == [
        (first, "status"),
        (first, "bad_body"),
        (first, "ok"),
        (first, "invalid_json"),
        (other, "ok"),
        (streamed, "rejected"),
    ]
    assert fake.fault_count() == 3
    # invalid_json is a 200 but not a valid answer: only "ok" outcomes count as delivered answers
    assert fake.ok_counts_by_hash() == {first: 1, other: 1}
    assert fake.counts_by_hash()[first] == 4


def test_answer_fn_error_is_recorded(fake, client):
    fake.answer_fn = lambda body: 1 / 0
    with pytest.raises(openai.InternalServerError, match="ZeroDivisionError"):
        _ask(client)
    assert [kind for _, kind in fake.outcomes] == ["answer_fn_error"]
    assert fake.fault_count() == 0 and fake.ok_counts_by_hash() == {}


def test_outcomes_are_thread_safe(fake):
    fake.fault_rates = {"status:503": 0.3, "bad_body": 0.2}

    async def run() -> None:
        async with openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0, timeout=10) as aclient:
            tasks = [
                aclient.chat.completions.create(
                    model="fake-model-1", messages=_messages(f"segment {i}"), response_format=_json_schema_format()
                )
                for i in range(40)
            ]
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert len(fake.outcomes) == fake.count() == 40
    assert [digest for digest, _ in fake.outcomes] == [body_hash(b) for b in fake.requests]
    assert fake.fault_count() + sum(fake.ok_counts_by_hash().values()) == 40
    assert 0 < fake.fault_count() < 40


def test_fault_rates_draw_429_with_and_without_retry_after():
    seen: dict[str | None, int] = {}
    with FakeServer(seed=3) as server:
        server.fault_rates = {"status:429": 0.4, "status:429:retry_after=1": 0.4}
        client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=5)
        for i in range(40):
            try:
                _ask(client, messages=_messages(f"segment {i}"))
                seen["ok"] = seen.get("ok", 0) + 1
            except openai.RateLimitError as exc:
                retry_after = exc.response.headers.get("retry-after")
                seen[retry_after] = seen.get(retry_after, 0) + 1
        assert server.fault_count() == seen[None] + seen["1"]
    assert set(seen) == {None, "1", "ok"}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("bad_body", Fault("bad_body")),
        ("status:503", Fault("status", status=503)),
        ("status:429:retry_after=1", Fault("status", status=429, retry_after=1.0)),
        ("status:429:retry_after=0.5", Fault("status", status=429, retry_after=0.5)),
    ],
)
def test_fault_from_key(key, expected):
    assert Fault.from_key(key) == expected


@pytest.mark.parametrize(
    "key", ["explode", "status:abc", "bad_body:500", "status:429:wait=1", "status:429:retry_after", "status:1:2:3"]
)
def test_invalid_fault_rates_key_fails_on_assignment(fake, key):
    with pytest.raises(ValueError):
        fake.fault_rates = {key: 0.5}


def _post_bytes(fake, body: dict) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(
        f"{fake.base_url}/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as resp:  # urllib neither decompresses nor bounds headers much
        return {k.lower(): v for k, v in resp.headers.items()}, resp.read()


def test_lone_surrogate_is_legal_ascii_json(fake):
    fake.script = [Fault("lone_surrogate")]
    _, data = _post_bytes(fake, {"model": "m", "messages": _messages(), "response_format": _json_schema_format()})
    data.decode("ascii")  # sent as \u escapes: UTF-8 cannot carry a lone surrogate
    body = json.loads(data)
    assert body["model"].endswith("\udc80") and body["system_fingerprint"].endswith("\ud800")
    answer = json.loads(body["choices"][0]["message"]["content"])
    assert all(a["quote"].endswith("\udc80") for a in answer["assignments"])


def test_content_parts_and_content_null(fake):
    fake.script = [Fault("content_parts"), Fault("content_null")]
    request = {"model": "m", "messages": _messages(), "response_format": _json_schema_format()}
    parts = json.loads(_post_bytes(fake, request)[1])["choices"][0]["message"]["content"]
    assert [p["type"] for p in parts] == ["text", "text"]
    jsonschema.validate(json.loads("".join(p["text"] for p in parts)), CODING_SCHEMA)
    message = json.loads(_post_bytes(fake, request)[1])["choices"][0]["message"]
    assert message["content"] is None and message["refusal"] is None


def test_gzip_bomb_expands_to_bomb_bytes_then_a_valid_answer(fake):
    import zlib

    fake.bomb_bytes = 100_000
    fake.script = [Fault("gzip_bomb")]
    headers, data = _post_bytes(fake, {"model": "m", "messages": _messages()})
    body = zlib.decompress(data, 31)
    assert headers["content-encoding"] == "gzip" and len(data) < 1_000 < len(body)
    assert body[:100_000].strip() == b"" and json.loads(body)["choices"][0]["message"]["content"] == "{}"


def test_huge_header(fake):
    fake.header_bytes = 10_000
    fake.script = [Fault("huge_header")]
    headers, data = _post_bytes(fake, {"model": "m", "messages": _messages()})
    assert len(headers["x-padding"]) == 10_000 and json.loads(data)["object"] == "chat.completion"
