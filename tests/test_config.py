"""The config and codebook are validated up front, and their committed JSON Schemas match the models."""

import json

import jsonschema
import pytest

from qualcode import config
from qualcode.errors import ConfigError
from qualcode.inputs import codebook

from conftest import DATA, REPO


def test_committed_schemas_match_the_models():
    # Regenerate with: python -c "import json,qualcode.config as c; print(json.dumps(c.json_schema(), indent=2))"
    assert json.loads((REPO / "schemas/config.schema.json").read_text()) == config.json_schema()
    assert json.loads((REPO / "schemas/codebook.schema.json").read_text()) == codebook.json_schema()


def test_shipped_config_and_codebook_are_valid():
    raw = config.read_yaml(REPO / "config/config.yaml", "config")
    jsonschema.validate(raw, config.json_schema())
    cfg = config.resolve(raw)
    assert cfg.llm.provider == "local"
    cb = codebook.load(REPO / cfg.codebook)
    jsonschema.validate(codebook.read(REPO / cfg.codebook), codebook.json_schema())
    assert cb.fields


def test_defaults_are_filled_in():
    cfg = config.resolve({})
    assert cfg.chunking.max_tokens > cfg.chunking.overlap_tokens
    assert cfg.llm.temperature == 0


@pytest.mark.parametrize(
    "raw, setting",
    [
        ({"llm": {"modle": "x"}}, "llm.modle"),
        ({"chunking": {"max_tokens": "many"}}, "chunking.max_tokens"),
        ({"llm": {"provider": "anthropic"}}, "llm.provider"),
        ({"chunking": {"max_tokens": 100, "overlap_tokens": 80}}, "chunking.overlap_tokens"),
        ({"unknown_top": 1}, "unknown_top"),
    ],
)
def test_bad_config_names_the_setting(raw, setting):
    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        config.resolve(raw, "config/config.yaml")
    if setting != "chunking.overlap_tokens":  # a cross-field rule: pydantic checks it, the JSON Schema cannot
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(raw, config.json_schema())


def test_missing_codebook_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml.*not found"):
        codebook.load(tmp_path / "nope.yaml")


def test_broken_yaml_names_the_file(tmp_path):
    p = tmp_path / "cb.yaml"
    p.write_text("fields: [\n")
    with pytest.raises(ConfigError, match="cb.yaml.*not valid YAML"):
        codebook.load(p)


def _codebook(**field):
    base = {"name": "emotions", "type": "multiple_choice", "description": "d", "values": []}
    return {"name": "c", "version": "1", "fields": [{**base, **field}]}


@pytest.mark.parametrize(
    "raw, message",
    [
        (_codebook(), "list of values is empty"),
        (_codebook(values=[{"name": "a", "definition": "x"}, {"name": "a", "definition": "y"}]), "more than once: a"),
        (
            {
                "name": "c",
                "version": "1",
                "fields": [_codebook(values=[{"name": "a", "definition": "x"}])["fields"][0]] * 2,
            },
            "used more than once: emotions",
        ),
        (_codebook(type="boolean", values=[{"name": "a", "definition": "x"}]), "only choice fields take values"),
        (_codebook(name="Bad Name", values=[{"name": "a", "definition": "x"}]), "field 'Bad Name', name"),
    ],
)
def test_bad_codebook_is_a_clear_error(tmp_path, raw, message):
    with pytest.raises(ConfigError, match=message):
        codebook.parse(raw, tmp_path / "codebook.yaml")


def test_example_codebook_in_tests_loads():
    assert [f.type for f in codebook.load(DATA / "codebook.yaml").fields] == [
        "multiple_choice",
        "single_choice",
        "boolean",
        "text",
    ]
