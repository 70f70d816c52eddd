"""The asker: any question (not only a chunk to code) answered through the same cache, validation, re-asks and
journal as coding, against the fake server through the real openai client."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from qualcode.coding.asker import Question, RequestBuilder, ask_questions, request_for
from qualcode.coding.cache import AnswerCache
from qualcode.coding.validate import AnswerValidator
from qualcode.config import LimitsConfig, LLMConfig
from qualcode.errors import LimitReached

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "minLength": 3}, "size": {"type": "integer", "minimum": 1}},
    "required": ["name", "size"],
    "additionalProperties": False,
}


class Theme(BaseModel):
    name: str
    size: int


@pytest.fixture
def llm(fake_server, monkeypatch):
    monkeypatch.setenv("QUALCODE_TEST_KEY", "sk-test-FAKE-asker-key-7")
    return LLMConfig(
        provider="openai", base_url=fake_server.base_url, model="fake", structured_output="json_schema",
        api_key_env="QUALCODE_TEST_KEY", concurrency=2,
    )  # fmt: skip


def _questions(llm, n=3):
    validate = AnswerValidator(SCHEMA, Theme)
    build = RequestBuilder(llm, SCHEMA)
    return [
        Question(f"group {i}", build([{"role": "user", "content": f"Name group {i} of passages."}]), validate)
        for i in range(n)
    ]


def test_questions_are_answered_validated_and_a_second_ask_sends_nothing(llm, fake_server, tmp_path):
    with AnswerCache(tmp_path / "cache") as cache:
        first = ask_questions(_questions(llm), llm, cache, journal=tmp_path / "journal" / "job.jsonl")
        sent = len(fake_server.requests)
        again = ask_questions(_questions(llm), llm, cache, journal=tmp_path / "journal" / "job.jsonl")
    assert sent == 3 and len(fake_server.requests) == 3  # the rerun is answered by the cache alone
    assert [a.status for a in first] == ["coded"] * 3 and all(a.cache_hit for a in again)
    for a, b in zip(first, again, strict=True):
        Theme.model_validate(a.answer.answer)  # the fake answers from the schema; the answer was checked against it
        assert a.answer.answer == b.answer.answer and a.key == b.key == a.question.request.key()
    # the request carries the question's schema, as coding's carries the codebook's
    assert fake_server.requests[0]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert not (tmp_path / "journal" / "job.jsonl").exists()  # every answer reached the cache: journal discarded


def test_an_invalid_answer_is_reasked_with_the_error_and_kept_under_the_first_request(llm, fake_server, tmp_path):
    answers = iter([json.dumps({"name": "ab", "size": 2}), json.dumps({"name": "masks", "size": 2})])
    fake_server.answer_fn = lambda body: next(answers)
    [q] = _questions(llm, 1)
    with AnswerCache(tmp_path / "cache") as cache:
        [asked] = ask_questions([q], llm, cache)
        assert cache.get(q.request.key()).answer == {"name": "masks", "size": 2}
    assert asked.answer.answer == {"name": "masks", "size": 2} and asked.reasks == 1 and asked.answer.attempts == 2
    assert "name" in fake_server.requests[1]["messages"][-1]["content"]  # the model was told what was wrong


def test_an_answer_that_never_validates_is_a_failure_with_its_facts_not_an_exception(llm, fake_server, tmp_path):
    fake_server.answer_fn = lambda body: json.dumps({"name": "x", "size": 0})
    [q] = _questions(llm, 1)
    with AnswerCache(tmp_path / "cache") as cache:
        [asked] = ask_questions([q], llm.model_copy(update={"max_reasks": 1}), cache)
        assert cache.get(q.request.key()) is None  # nothing invalid is cached
    assert asked.status == "failed" and asked.answer is None
    assert "does not match the schema" in asked.error and asked.facts["attempts"] == 2


def test_a_limit_stops_the_questions_and_keeps_what_was_paid_for(llm, fake_server, tmp_path):
    with AnswerCache(tmp_path / "cache") as cache:
        with pytest.raises(LimitReached, match=r"1 request\(s\) of this job are answered and kept, 2 pending"):
            ask_questions(
                _questions(llm),
                llm.model_copy(update={"concurrency": 1}),
                cache,
                limits=LimitsConfig(requests_per_day=1),
            )
        assert len(cache.keys()) == 1
    assert len(fake_server.requests) == 1


def test_request_for_builds_the_same_request_as_a_builder(llm):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert request_for(llm, messages, SCHEMA) == RequestBuilder(llm, SCHEMA)(messages)
    assert request_for(llm, messages, SCHEMA, replicate=2).key() != request_for(llm, messages, SCHEMA).key()
