"""The cache key covers everything that determines an answer and nothing else; the cache survives
processes and never evicts."""

import multiprocessing

import diskcache
import pytest

from qualcode.coding.cache import AnswerCache
from qualcode.records import CachedAnswer, LLMRequest

BASE = dict(
    provider="openai",
    base_url="http://127.0.0.1:8000/v1",
    model="m",
    messages=({"role": "user", "content": "hi"},),
    temperature=0.0,
    top_p=1.0,
    max_tokens=100,
    seed=1,
    response_format={"type": "json_object", "schema": {"type": "object"}},
)


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": "https://api.openai.com/v1"},
        {"model": "m2"},
        {"messages": ({"role": "user", "content": "hi!"},)},
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"max_tokens": 101},
        {"seed": 2},
        {"seed": None},
        {"response_format": {"type": "json_object", "schema": {"type": "object", "maxProperties": 1}}},
        {"response_format": None},
        {"extra_body": {"top_k": 5}},
        {"provider": "local"},
    ],
)
def test_everything_that_determines_the_answer_changes_the_key(change):
    assert LLMRequest(**BASE).key() != LLMRequest(**{**BASE, **change}).key()


def test_key_is_stable_and_ignores_dict_order():
    a = LLMRequest(**BASE)
    b = LLMRequest(**{**BASE, "response_format": {"schema": {"type": "object"}, "type": "json_object"}})
    assert a.key() == b.key() == LLMRequest(**BASE).key()
    assert len(a.key()) == 64


def test_the_request_cannot_carry_a_key():
    with pytest.raises(ValueError):
        LLMRequest(**BASE, api_key="sk-secret")


ANSWER = CachedAnswer(
    answer={"a": 1},
    raw='{"a": 1}',
    model_served="m",
    system_fingerprint=None,
    finish_reason="stop",
    tokens_in=1,
    tokens_out=2,
    latency_s=0.5,
    attempts=1,
    reasks=0,
)


def test_roundtrip_and_persistence(tmp_path):
    with AnswerCache(tmp_path / "c") as c:
        assert c.get("k") is None
        c.put("k", ANSWER)
    with AnswerCache(tmp_path / "c") as c:
        assert c.get("k") == ANSWER
        assert len(c) == 1


def test_eviction_is_off(tmp_path):
    with AnswerCache(tmp_path / "c") as c:
        c.put("k", ANSWER)
    # the setting as it is stored in the cache's own database, where every process opening the cache reads it
    with diskcache.Cache(str(tmp_path / "c")) as stored:
        assert stored.eviction_policy == "none"


def _writer(directory, start, n):
    with AnswerCache(directory) as c:
        for i in range(start, start + n):
            c.put(f"k{i}", ANSWER.model_copy(update={"tokens_in": i}))


def test_several_processes_share_one_cache(tmp_path):
    procs = [
        multiprocessing.get_context("spawn").Process(target=_writer, args=(tmp_path / "c", i * 50, 50))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with AnswerCache(tmp_path / "c") as c:
        assert len(c) == 200
        assert c.get("k123").tokens_in == 123
