"""Coding chunks through the real openai client against the fake server: re-asks, retries, permanent
errors, and what is cached."""

from __future__ import annotations

import asyncio

import pytest

from qualcode.coding.cache import AnswerCache
from qualcode.coding.coder import Coder
from qualcode.coding.prompts import load as load_prompts
from qualcode.config import LLMConfig
from qualcode.errors import ConfigError, ProviderError
from qualcode.records import Chunk

from conftest import REPO
from workflow_helpers import request_key

KEY = "sk-test-FAKE-unit-key-42"


def _chunk(i: int, text: str = "NURSE 2: We had no masks and I was scared.") -> Chunk:
    return Chunk(f"c{i:03d}", "doc.txt", i, 0, len(text), 12, ("NURSE 2",), f"{text} ({i})")


@pytest.fixture
def coder_for(codebook, fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("QUALCODE_TEST_KEY", KEY)
    prompts = load_prompts(REPO / "config/prompts/system.j2", REPO / "config/prompts/user.j2", codebook, "json_schema")
    caches = []

    def make(**llm):
        settings = dict(
            provider="openai",
            base_url=fake_server.base_url,
            model="fake",
            structured_output="json_schema",
            api_key_env="QUALCODE_TEST_KEY",
        )
        cfg = LLMConfig(**{**settings, **llm})
        cache = AnswerCache(tmp_path / "cache")
        caches.append(cache)
        return Coder(cfg, prompts, cache)

    yield make
    for c in caches:
        c.close()


def _code(coder, chunks):
    return asyncio.run(coder.code_all(chunks))


def test_invalid_answer_is_reasked_with_the_error_and_cached_under_the_first_request(coder_for, fake_server):
    from fakeserver import Fault

    fake_server.script = [Fault("invalid_json")]
    [r] = _code(coder_for(concurrency=1), [_chunk(1)])
    assert r.status == "coded" and r.reasks == 1 and r.attempts == 2
    reask = fake_server.requests[1]["messages"]
    assert reask[-2]["role"] == "assistant" and "not valid JSON" in reask[-1]["content"]
    [again] = _code(coder_for(), [_chunk(1)])
    assert again.cache_hit and again.request_hash == r.request_hash and fake_server.count() == 2


def test_exhausted_reasks_make_a_failure_with_the_raw_answer_and_nothing_cached(coder_for, fake_server):
    from fakeserver import Fault

    fake_server.script = [Fault("schema_invalid")] * 3
    [r] = _code(coder_for(max_reasks=2, concurrency=1), [_chunk(1)])
    assert r.status == "failed" and r.attempts == 3 and r.raw == '{"unexpected": 1}'
    assert "does not match the schema" in r.error
    [again] = _code(coder_for(), [_chunk(1)])
    assert not again.cache_hit and again.status == "coded" and fake_server.count() == 4


def test_transient_errors_are_retried_honouring_retry_after(coder_for, fake_server):
    from fakeserver import Fault

    fake_server.script = [Fault("status", status=429, retry_after=0.2), Fault("status", status=503), Fault("reset")]
    [r] = _code(coder_for(max_attempts=4, concurrency=1), [_chunk(1)])
    assert r.status == "coded" and fake_server.count() == 4


def test_retries_exhausted_fail_the_chunk_not_the_run(coder_for, fake_server):
    from fakeserver import Fault

    fake_server.script = [Fault("status", status=503)] * 2
    results = _code(coder_for(max_attempts=2, concurrency=1), [_chunk(1), _chunk(2)])
    assert [r.status for r in results] == ["failed", "coded"]
    assert "503" in results[0].error


@pytest.mark.parametrize("status, hint", [(401, "QUALCODE_TEST_KEY"), (404, "llm.model"), (400, "refused")])
def test_permanent_errors_stop_with_a_clear_message_and_no_key(coder_for, fake_server, status, hint):
    from fakeserver import Fault

    fake_server.script = [Fault("status", status=status)]
    with pytest.raises(ProviderError) as exc:
        _code(coder_for(concurrency=1), [_chunk(1)])
    msg = str(exc.value)
    assert hint in msg and fake_server.base_url in msg and "'fake'" in msg
    assert KEY not in msg
    assert fake_server.count() == 1  # no retry of a permanent error


def test_concurrent_requests_each_get_their_own_answer(coder_for, fake_server):
    chunks = [_chunk(i) for i in range(20)]
    results = _code(coder_for(concurrency=8), chunks)
    assert [r.chunk_id for r in results] == [c.chunk_id for c in chunks]
    assert all(r.status == "coded" for r in results) and fake_server.count() == 20
    assert len({r.request_hash for r in results}) == 20


def test_fully_cached_run_needs_no_key(coder_for, fake_server, monkeypatch):
    _code(coder_for(), [_chunk(1)])
    monkeypatch.delenv("QUALCODE_TEST_KEY")
    [r] = _code(coder_for(), [_chunk(1)])
    assert r.cache_hit
    with pytest.raises(ConfigError, match="no environment variable named by llm.api_key_env"):  # a miss needs the key
        _code(coder_for(base_url="https://api.example.invalid/v1"), [_chunk(1)])


def test_key_file_is_used_and_a_loose_one_warned_about(codebook, tmp_path, caplog):
    from qualcode.coding.api import resolve_api_key

    keyfile = tmp_path / "openai.key"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o644)
    cfg = LLMConfig(provider="openai", api_key_env="QUALCODE_TEST_UNSET", api_key_file=str(keyfile))
    assert resolve_api_key(cfg, "https://api.openai.com/v1") == KEY
    assert "readable by other users" in caplog.text and KEY not in caplog.text
    # a server on this machine needs no key: the client gets a placeholder, never a key from elsewhere
    loopback = LLMConfig(api_key_env="QUALCODE_TEST_UNSET")
    assert resolve_api_key(loopback, "http://127.0.0.1:8080/v1") == "sk-no-key-required"
    assert resolve_api_key(loopback, "http://localhost:8080/v1") == "sk-no-key-required"
    with pytest.raises(ConfigError, match="no environment variable named by llm.api_key_env"):  # and a remote one does
        resolve_api_key(loopback, "https://api.openai.com/v1")


@pytest.mark.parametrize(
    "llm",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"seed": None, "extra_body": {"top_k": 20, "repeat_penalty": 1.1}}, id="extra-body-no-seed"),
    ],
)
def test_the_request_a_server_receives_maps_back_to_the_recorded_hash(coder_for, fake_server, llm):
    """workflow_helpers.request_key, which the SIGKILL tests use to tell which answers were asked for twice, rebuilds
    from the wire exactly the key the coder records (llm_calls.request_hash, the cache key)."""
    [r] = _code(coder_for(**llm), [_chunk(1)])
    [body] = fake_server.requests
    assert {k: body[k] for k in llm.get("extra_body", {})} == llm.get("extra_body", {})  # sent in the body
    assert ("seed" in body) == (llm.get("seed", LLMConfig().seed) is not None)  # an unset seed is left out
    assert request_key(body, fake_server.base_url) == r.request_hash
