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


# -- the agreement numbers and their n -------------------------------------------------------------------------


def _subset_study():
    """ann codes 50 documents, bob the first 20 of them, cy the first 8 (coders of different subsets); the model
    all 50. One code ("fear") each coder marks often; one ("grief") ann marks on 2 documents only."""
    from qualcode.validity import agreement

    rng = np.random.default_rng(5)
    fear = rng.integers(0, 2, 50)
    grief = np.zeros(50, dtype=np.int64)
    grief[[3, 30]] = 1
    rated = {"ann": np.arange(50) < 50, "bob": np.arange(50) < 20, "cy": np.arange(50) < 8, "model": np.ones(50, bool)}
    flip = {"ann": 0.0, "bob": 0.1, "cy": 0.2, "model": 0.3}
    codes = []
    for name, truth in (("fear", fear), ("grief", grief)):
        cols = []
        for r in rated:
            x = np.where(rng.random(50) < flip[r], 1 - truth, truth) if name == "fear" else truth
            cols.append(np.where(rated[r], x, -1))
        codes.append(agreement.Code("emotions", name, ("absent", "present"), np.column_stack(cols)))
    rows, _ = agreement.evaluate(codes, list(rated), ["model"], "majority", agreement.bootstrap_weights(50, 30, 1))
    return pd.DataFrame(rows), codes


SETTINGS = {"unit": "document", "reference": "majority", "bootstrap": 30, "seed": 1, "replicates": 1, "arms": {}}


def test_majority_rows_say_what_it_rested_on():
    table, codes = _subset_study()
    x = codes[0].ratings[:, :3]  # the human coders
    coders = (x >= 0).sum(1)
    ones = (x == 1).sum(1)
    tied = (coders >= 2) & (2 * ones == coders)
    got = table[table.rater_a == "majority"].set_index(["value", "metric"])
    assert got.loc[("fear", "majority_one_coder"), "estimate"] == pytest.approx((coders == 1).mean())  # 30 of 50
    assert got.loc[("fear", "majority_tied"), "estimate"] == pytest.approx(tied.mean())
    assert got.loc[("fear", "majority_one_coder"), "n_units"] == 50
    decided = ~tied
    assert got.loc[("fear", "prevalence"), "estimate"] == pytest.approx((2 * ones > coders)[decided].mean())
    assert got.loc[("fear", "prevalence"), "n_units"] == decided.sum()


def test_methods_quotes_n_wherever_it_quotes_a_number():
    import re

    from qualcode.reporting import methods

    table, codes = _subset_study()
    text = methods.validation_paragraph(table, SETTINGS)
    # who coded what: each coder's documents and each pair's shared ones
    assert "documents coded by ann: 50, bob: 20, cy: 8" in text
    assert "ann and bob both: 20" in text and "ann and cy both: 8" in text
    coders = (codes[0].ratings[:, :3] >= 0).sum(1)
    assert f"The majority covers 50 documents: on {int((coders == 1).sum())} of them only one coder" in text
    assert "up to" not in text
    alpha = table[table.metric == "krippendorff_alpha"]
    model_vs = alpha[(alpha.rater_a == "model") & (alpha.rater_b == "majority")]
    n = sorted(model_vs.n_units[model_vs.estimate.notna()])
    assert f"n = {n[0]} to {n[-1]} documents" in text or f"n = {n[0]} documents" in text
    # every sentence quoting a coefficient (a number with two decimals) says on how many units
    for sentence in re.split(r"(?<=\.) (?=[A-Z])", text):
        if re.search(r"\b[01]\.\d\d\b", sentence):
            assert re.search(r"n = \d+( to \d+)? documents", sentence), sentence


def test_rare_codes_are_warned_about_and_marked(tmp_path):
    from qualcode.reporting import agreement, methods
    from qualcode.validity import validation

    table, codes = _subset_study()
    rare = table[validation.too_rare(table)]
    # by hand: each rater's positives (the majority's: more than half of the unit's coders, ties left out)
    count = {}
    for code in codes:
        x = code.ratings
        for i, r in enumerate(("ann", "bob", "cy", "model")):
            count[code.value, r] = int((x[:, i] == 1).sum())
        coders, ones = (x[:, :3] >= 0).sum(1), (x[:, :3] == 1).sum(1)
        count[code.value, "majority"] = int((2 * ones > coders).sum())
    pairs = table[table.rater_b.notna()]
    expected = {(v, a, b) for v, a, b in zip(pairs.value, pairs.rater_a, pairs.rater_b, strict=True)
                if min(count[v, a], count[v, b]) < 5}  # fmt: skip
    assert set(zip(rare.value, rare.rater_a, rare.rater_b, strict=True)) == expected
    # grief (ann marked it on 2 documents) in every comparison; fear only beside cy (8 documents)
    assert {v for v, _, _ in expected} == {"grief"} | ({"fear"} if count["fear", "cy"] < 5 else set())
    assert all("cy" in (a, b) for v, a, b in expected if v == "fear")
    text = methods.validation_paragraph(table, SETTINGS)
    names = "emotions: fear, emotions: grief" if count["fear", "cy"] < 5 else "emotions: grief"
    assert f"code(s) ({names}) a rater marked the code present on fewer than 5 documents" in text
    page = tmp_path / "agreement.html"
    agreement.agreement_html(table, pd.DataFrame(), "majority", page, ["model"], "document")
    html = page.read_text()
    assert "The unit of analysis is the <strong>document</strong>" in html
    assert "only one coder coded the unit" in html
    assert "*</td>" in html and "fewer than 5 documents" in html
    rows = agreement.forest(table, "majority", ["model"])
    assert rows[rows.code == "emotions: grief"].rare.all()
    assert not rows[(rows.code == "emotions: fear") & (rows.label == "ann vs bob")].rare.any()
    # each human pair its own labelled row, not one "human-human" row
    assert set(rows.label) == {"ann vs bob", "ann vs cy", "bob vs cy", "model vs majority"}
    agreement.plot_agreement(table, "majority", tmp_path / "forest.png", ["model"])
    assert (tmp_path / "forest.png").stat().st_size > 0


def test_agreement_page_names_the_chunk_unit(tmp_path):
    from qualcode.reporting import agreement

    table, _ = _subset_study()
    page = tmp_path / "agreement.html"
    agreement.agreement_html(table, pd.DataFrame(), "ann", page, ["model"], "chunk")
    html = page.read_text()
    assert "The unit of analysis is the <strong>chunk</strong>" in html and "chunks compared" in html
    assert "majority" not in html.split("<table")[0]  # a named reference: nothing about a majority
