"""Issue 22 item 4, the reporting fixes: n on every number methods.md quotes, the unit named, what "majority" rested
on, rare codes warned about, and `gold.load` vectorised with the same frames and messages as the row-by-row code."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import pytest

from qualcode.inputs import codebook
from qualcode.inputs.codebook import Codebook
from qualcode.validity import gold
from qualcode.validity.gold import BOOLEAN

from conftest import DATA

CB = codebook.load(DATA / "codebook.yaml")
TEXTS = {"a.txt": "I was scared every day. Then my colleague covered my shift.", "b.txt": "Nothing happened.", "c": "x"}


# fmt: off
def _problem_rowwise(
    df: pd.DataFrame, cb: Codebook, texts: Mapping[str, str] | None, unit: str, listed: Callable[[str], bool]
) -> tuple[pd.Series, pd.Series]:
    """(The code before vectorising, kept as the reference.) Each row's problem (or NA) and its value,
    normalised (booleans as true/false), located rows' offsets.
    Without `texts` (before the documents are read), a document is known if `listed` says it can be a listed
    file's, and offsets are not checked."""
    fields = {f.name: f for f in cb.fields if f.type != "text"}
    among = (
        "the files listed from ingest.input_dir" if texts is None else f"the {len(texts)} documents read from the input"
    )
    problems = pd.Series(pd.NA, index=df.index, dtype="object")
    values = df["value"].copy()
    for i, r in zip(df.index, df.to_dict("records"), strict=True):  # iterrows builds a Series a row
        doc, field, value = r["doc_id"], r["field"], r["value"]
        if pd.isna(r["coder"]):
            problems[i] = "no coder"
        elif pd.isna(doc):
            problems[i] = "no doc_id"
        elif not (listed(doc) if texts is None else doc in texts):
            problems[i] = f"unknown document {doc!r} (not among {among})"
        elif pd.isna(field) and pd.isna(value):
            continue  # the coder read the document and found nothing
        elif pd.isna(field) or field not in fields:
            text_fields = [f.name for f in cb.fields if f.type == "text"]
            why = " (a text field: free text is not compared)" if field in text_fields else ""
            problems[i] = f"unknown field {field!r}{why}; allowed: {', '.join(fields)}"
        else:
            f = fields[field]
            allowed = [v.name for v in f.values] if f.values else ["true", "false"]
            v = BOOLEAN.get(str(value).lower()) if f.type == "boolean" and not pd.isna(value) else value
            if pd.isna(v) or v not in allowed:
                problems[i] = f"value {value if pd.isna(value) else repr(value)} is not allowed for field {field!r}; " \
                    f"allowed: {', '.join(allowed)}"  # fmt: skip
            values[i] = v
            has_offsets = not (pd.isna(r["start"]) or pd.isna(r["end"]))
            if has_offsets and texts is not None and not 0 <= r["start"] < r["end"] <= len(texts[doc]):
                problems[i] = f"start {r['start']}, end {r['end']} are not a span of {doc!r} (0 to {len(texts[doc])})"
            elif unit == "chunk" and not has_offsets and pd.isna(r["quote"]):
                problems[i] = "validation.unit is chunk: each code needs start and end, or a quote, to place it"
    return problems, values
# fmt: on


def _varied(n: int, seed: int) -> pd.DataFrame:
    """Rows of every kind `_problem` tells apart: missing coder or document, unknown document, read-and-found-nothing,
    unknown, text and missing fields, allowed and not allowed values (booleans spelt every way), offsets in and out
    of the text, quotes and none."""
    rng = np.random.default_rng(seed)
    fields = [f.name for f in CB.fields] + ["nope", None]
    pick = lambda xs: [xs[i] for i in rng.integers(0, len(xs), n)]  # noqa: E731
    field = pick(fields)
    value = []
    for f in field:
        spec = next((x for x in CB.fields if x.name == f), None)
        good = [v.name for v in spec.values] if spec is not None and spec.values else list(BOOLEAN) + ["Yes", "TRUE"]
        value.append(pick(good + ["bogus", None])[0])
    empty = rng.random(n) < 0.1
    start = rng.integers(-2, 40, n).astype(object)
    end = (start + rng.integers(-3, 30, n)).astype(object)
    no_offsets = rng.random(n) < 0.4
    start[no_offsets] = None
    end[no_offsets & (rng.random(n) < 0.8)] = None
    df = pd.DataFrame({
        "coder": pick(["ann", "bob", None, "cy"]),
        "doc_id": pick(["a.txt", "b.txt", "c", "zzz.txt", None]),
        "field": [None if e else f for e, f in zip(empty, field, strict=True)],
        "value": [None if e else v for e, v in zip(empty, value, strict=True)],
        "start": pd.array(start, dtype="Int64"),
        "end": pd.array(end, dtype="Int64"),
        "quote": pick(["scared", None, "not there"]),
    })  # fmt: skip
    for c in ("coder", "doc_id", "field", "value", "quote"):
        df[c] = df[c].astype("string")
    # the old code stops with a TypeError on a missing field beside a value when the codebook has a text field
    return df[~(df["field"].isna() & df["value"].notna())].reset_index(drop=True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("unit", ["document", "chunk"])
@pytest.mark.parametrize("with_texts", [True, False])
def test_vectorised_problems_equal_the_row_by_row_ones(seed, unit, with_texts):
    df = _varied(400, seed)
    texts = TEXTS if with_texts else None
    listed = lambda d: d.endswith(".txt")  # noqa: E731
    new_problems, new_values = gold._problem(df, CB, texts, unit, listed)
    old_problems, old_values = _problem_rowwise(df, CB, texts, unit, listed)
    assert new_problems.isna().sum() < len(df) and new_problems.notna().sum() > 0  # the inputs are varied
    assert new_problems.fillna("ok").tolist() == old_problems.fillna("ok").tolist()
    pd.testing.assert_series_equal(new_values, old_values)


@pytest.mark.parametrize("unit", ["document", "chunk"])
def test_load_gives_the_old_frames_and_messages(tmp_path, monkeypatch, unit):
    df = _varied(300, 11)
    path = tmp_path / "g.csv"
    df.to_csv(path, index=False)
    new = gold.load([path], CB, TEXTS, unit=unit, on_error="skip")
    monkeypatch.setattr(gold, "_problem", _problem_rowwise)
    old = gold.load([path], CB, TEXTS, unit=unit, on_error="skip")
    pd.testing.assert_frame_equal(new[0], old[0])
    assert new[1] == old[1] and len(new[1]) > 10
    first = old[1][0].split(": ", 1)[1]
    with pytest.raises(gold.GoldError, match="row") as failed:
        gold.load([path], CB, TEXTS, unit=unit, on_error="fail")
    assert first in str(failed.value)


def test_missing_field_beside_a_value_is_named_not_a_crash():
    df = pd.DataFrame({"coder": ["ann"], "doc_id": ["a.txt"], "field": [None], "value": ["fear"], "start": [None],
                       "end": [None], "quote": [None]}).astype({"start": "Int64", "end": "Int64"})  # fmt: skip
    df = df.astype({c: "string" for c in ("coder", "doc_id", "field", "value", "quote")})
    problems, _ = gold._problem(df, CB, TEXTS, "document", bool)
    assert problems[0].startswith("unknown field None; allowed: emotions")
