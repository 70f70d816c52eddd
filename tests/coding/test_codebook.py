"""The answer schema generated from the codebook bounds every string and array, and agrees with the
pydantic model."""

import jsonschema
import pytest
from pydantic import ValidationError

from qualcode.coding.prompts import load as load_prompts

from conftest import REPO


def _walk(schema):
    yield schema
    for sub in schema.get("properties", {}).values():
        yield from _walk(sub)
    if "items" in schema:
        yield from _walk(schema["items"])


def test_every_string_and_array_is_bounded(codebook):
    schema = codebook.answer_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for node in _walk(schema):
        if node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, node
        if node.get("type") == "array":
            assert "maxItems" in node, node
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert set(node["required"]) == set(node["properties"])


GOOD = {
    "emotions": {"value": ["fear"], "quote": "I was scared"},
    "solidarity": {"value": "present", "quote": ""},
    "own_health": {"value": False, "quote": ""},
    "summary": {"value": "A nurse is afraid."},
}


@pytest.mark.parametrize(
    "patch",
    [
        {"emotions": {"value": ["fear", "pride", "none"], "quote": ""}},  # over max_items
        {"emotions": {"value": ["joy"], "quote": ""}},  # not an allowed value
        {"solidarity": {"value": "maybe", "quote": ""}},
        {"own_health": {"value": "yes", "quote": ""}},
        {"summary": {"value": "x" * 81}},  # over max_length
        {"summary": {"value": "ok", "quote": "not asked for"}},
        {"emotions": {"value": ["fear"], "quote": "q" * 61}},  # quote over quote_max_length
    ],
)
def test_schema_and_model_reject_the_same_answers(codebook, patch):
    answer = {**GOOD, **patch}
    validator = jsonschema.Draft202012Validator(codebook.answer_schema())
    assert not validator.is_valid(answer)
    with pytest.raises(ValidationError):
        codebook.answer_model().model_validate(answer)


def test_schema_and_model_accept_a_good_answer(codebook):
    jsonschema.validate(GOOD, codebook.answer_schema())
    codebook.answer_model().model_validate(GOOD)


def test_prompt_renders_every_definition(codebook):
    prompts = load_prompts(REPO / "config/prompts/system.j2", REPO / "config/prompts/user.j2", codebook, "prompt")
    system, user = prompts.messages("I was scared.", ["NURSE 2"])
    for f in codebook.fields:
        assert f.name in system["content"] and f.description in system["content"]
        for v in f.values:
            assert v.definition in system["content"]
    assert '"maxLength"' in system["content"]  # prompt-only mode carries the schema
    assert "I was scared." in user["content"] and "NURSE 2" in user["content"]
    schema_mode = load_prompts(
        REPO / "config/prompts/system.j2", REPO / "config/prompts/user.j2", codebook, "json_object"
    )
    assert '"maxLength"' not in schema_mode.messages("x")[0]["content"]
