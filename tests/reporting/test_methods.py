"""methods.md never shows an empty value: whatever fact the manifest lacks, the text says so in words."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest

from qualcode.config import Config
from qualcode.outputs import provenance
from qualcode.reporting import methods


def _calls(provider: str, base_url: str, answered: list[str | None]) -> pd.DataFrame:
    n = len(answered)
    return pd.DataFrame(
        {
            "provider": [provider] * n,
            "base_url": [base_url] * n,
            "model_asked": ["smollm2-135m-instruct"] * n,
            "model_served": ["smollm2"] * n,
            "system_fingerprint": [None] * n,
            "answered_at": answered,
            "cache_hit": pd.Series([False] * n, dtype=bool),
            "attempts": pd.Series([1] * n, dtype="int64"),
            "reasks": pd.Series([0] * n, dtype="int64"),
            "retries": pd.Series([0] * n, dtype="int64"),
            "tokens_in": pd.Series([300] * n, dtype="float64"),
            "tokens_out": pd.Series([80] * n, dtype="float64"),
            "tokens_cached": pd.Series([0] * n, dtype="float64"),
            "cost": pd.Series([None] * n, dtype="float64"),
            "batch_id": pd.Series([None] * n, dtype=object),
        }
    )


def _manifest(calls: pd.DataFrame, documents: int) -> dict:
    cfg = Config()
    tables = {
        "documents": pd.DataFrame({"doc_id": [f"survey.csv#{i}" for i in range(1, documents + 1)]}),
        "chunks": pd.DataFrame({"chunk_id": [f"c{i}" for i in range(len(calls))]}),
        "codings": pd.DataFrame({"status": pd.Series(["coded"] * len(calls), dtype=str)}),
        "codes": pd.DataFrame({c: pd.Series([], dtype=str) for c in ("chunk_id", "field", "grounding")}),
        "llm_calls": calls,
        "failures": pd.DataFrame({"stage": pd.Series([], dtype=str)}),
    }
    return {
        "origin": provenance.origin(cfg),
        "config": cfg.model_dump(mode="json"),
        "sha256": {
            "codebook": "ab" * 32,
            "prompts": {"system": "cd" * 32, "user": "ef" * 32},
            "answer_schema": "12" * 32,
        },
        "software": provenance.versions(),
        "workflow": {"commit": "0" * 40, "uncommitted_changes": False},
        "model": provenance.models(tables["llm_calls"]),
        "structured_output": cfg.llm.structured_output,
        "chunking": cfg.chunking.model_dump(),
        "counts": provenance.counts(tables),
    }


def _leaves(d, path=()):
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def _blank(m: dict, path: tuple, value) -> dict:
    m = copy.deepcopy(m)
    target = m
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return m


EMPTY = [
    re.compile(r"\bNone\b"),
    re.compile(r"\bnan\b"),
    re.compile(r"\|[ \t]*\|"),  # an empty table cell
    re.compile(r"\(\s*\)|\(\s*,|,\s*\)|,\s*,"),  # "()", "(, x)"
    re.compile(r"\b(at|as|version|model|Snakemake|seed|temperature|top-p) [,.;)]"),  # "at ," "version ;"
    re.compile(r"``"),
    re.compile(r"[^\n|]  +[^ ]"),  # two spaces where a word went missing (not table padding)
]


def _assert_no_empty_value(text: str, where: str) -> None:
    prose = text.split("## Appendix")[0]
    for pattern in EMPTY:
        found = pattern.search(prose)
        assert found is None, (
            f"{where}: empty value {found.group(0)!r} in:\n{prose[max(0, found.start() - 80) : found.end() + 80]}"
        )


# The run of the issue: the local model, and every input skipped, so the calls table is empty.
BASES = {
    "local, no answers": _manifest(_calls("local", "local", []), 0),
    "local, answered": _manifest(_calls("local", "local", ["2026-11-27T10:00:00Z", "2026-11-28T09:00:00Z"]), 2),
    "api, no answers": None,  # filled below
}
_api = _manifest(_calls("openai", "https://api.openai.com/v1", []), 0)
_api["config"]["llm"]["provider"] = "openai"
BASES["api, no answers"] = _api


@pytest.mark.parametrize("base", sorted(BASES))
def test_methods_of_a_run_with_or_without_answers_has_no_empty_value(base):
    text = methods.document(BASES[base], "Essential workers", "1.0", {"Codebook": "name: x\n"})
    _assert_no_empty_value(text, base)


def test_methods_of_a_local_run_without_answers_names_the_configured_model():
    text = methods.paragraph(BASES["local, no answers"], "Essential workers", "1.0")
    assert "language model smollm2-135m-instruct" in text
    assert "run locally in-process" in text and "API at" not in text
    assert "not recorded (no answer carries a date)" in text


LEAVES = sorted({path for m in BASES.values() for path, _ in _leaves(m)})


@pytest.mark.parametrize("path", LEAVES, ids=".".join)
@pytest.mark.parametrize("blank", [None, "", []], ids=["None", "empty string", "empty list"])
def test_every_field_missing_or_empty_is_said_in_words(path, blank):
    for base, m in BASES.items():
        try:
            broken = _blank(m, path, blank)
        except (KeyError, TypeError):
            continue
        text = methods.document(broken, "Essential workers", "1.0", {"Codebook": "name: x\n"})
        _assert_no_empty_value(text, f"{base}, {'.'.join(path)} = {blank!r}")


@pytest.mark.parametrize("name, version", [("", ""), (None, None)])
def test_codebook_without_name_or_version(name, version):
    _assert_no_empty_value(methods.document(BASES["local, answered"], name, version, {}), "codebook")
