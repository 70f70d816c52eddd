"""Answers are parsed and validated with errors a model can act on; quotes are grounded in the text."""

import json

import pytest

from qualcode.coding.validate import AnswerValidator, ground_quote, reask_messages
from qualcode.errors import AnswerError

from test_codebook import GOOD


@pytest.fixture
def validate(codebook):
    return AnswerValidator(codebook.answer_schema(), codebook.answer_model())


def test_valid_answer_parses(validate):
    assert validate(json.dumps(GOOD)) == GOOD


def test_code_fence_is_tolerated(validate):
    assert validate("```json\n" + json.dumps(GOOD) + "\n```") == GOOD


def test_invalid_json_is_an_answer_error_with_the_raw_text(validate):
    with pytest.raises(AnswerError, match="not valid JSON") as exc:
        validate('{"emotions": ')
    assert exc.value.raw == '{"emotions": '


def test_truncation_is_explained(validate):
    with pytest.raises(AnswerError, match="token limit"):
        validate('{"emotions": {"value": ["fe', finish_reason="length")


def test_schema_violation_names_the_path(validate):
    bad = {**GOOD, "solidarity": {"value": "maybe", "quote": ""}}
    with pytest.raises(AnswerError, match="solidarity/value"):
        validate(json.dumps(bad))


def test_reask_carries_the_error():
    msgs = reask_messages("{bad", "not valid JSON")
    assert msgs[0] == {"role": "assistant", "content": "{bad"}
    assert "not valid JSON" in msgs[1]["content"]


TEXT = "Interviewer: How was it?\nNURSE 2: Honestly?  We   had no masks.\nIt was “terrifying”."


def test_exact_quote_offsets_are_document_offsets():
    g = ground_quote("We   had no masks", TEXT, chunk_start=100)
    assert g.status == "exact" and g.grounded
    assert TEXT[g.start - 100 : g.end - 100] == "We   had no masks"


@pytest.mark.parametrize("quote", ["we had NO masks", '"We had no masks."', 'it was "terrifying"'])
def test_whitespace_case_and_quote_marks_are_forgiven(quote):
    g = ground_quote(quote, TEXT, 0)
    assert g.status == "normalised"
    assert TEXT[g.start : g.end].lower().replace(" ", "")[:4] == quote.strip('"').lower().replace(" ", "")[:4]


def test_invented_quote_is_ungrounded_and_empty_is_empty():
    assert ground_quote("we had plenty of gowns", TEXT, 0).status == "ungrounded"
    assert not ground_quote("we had plenty of gowns", TEXT, 0).grounded
    assert ground_quote("", TEXT, 0).status == "empty"
