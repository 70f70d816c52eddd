"""Corrected prevalence estimates (validity.prevalence): the estimator against hand computations and against
enumeration of every possible sample, and the refusals when the human sample is not a probability sample."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from qualcode.inputs import codebook
from qualcode.inputs.codebook import Codebook
from qualcode.validity import prevalence
from qualcode.validity.sampling import SampleError

NAN = float("nan")


def test_worked_example_two_strata_by_hand():
    # 10 units; stratum "a" = units 0-3 (2 of 4 drawn, pi 1/2), stratum "b" = units 4-9 (2 of 6 drawn, pi 1/3)
    predicted = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 1])
    truth = np.array([1, 0, NAN, NAN, 1, 1, NAN, NAN, NAN, NAN])
    pi = np.array([0.5, 0.5, NAN, NAN, 1 / 3, 1 / 3, NAN, NAN, NAN, NAN])
    stratum = np.array(["a", "a", None, None, "b", "b", None, None, None, None], dtype=object)
    e = prevalence.estimate(predicted, truth, pi, stratum)
    # errors y - yhat on the sample: unit 0: 0, unit 1: -1, unit 4: 0, unit 5: +1
    # HT total of errors: -1 / (1/2) + 1 / (1/3) = -2 + 3 = 1; model's total 4; corrected (4 + 1) / 10
    assert e.naive == pytest.approx(0.4)
    assert e.corrected == pytest.approx(0.5)
    # stratum a: z = 0, -2 (mean -1): (1 - 1/2) * 2/1 * (1 + 1) = 2; stratum b: z = 0, 3: (1 - 1/3) * 2 * 4.5 = 6
    # textbook N_h^2 (1 - f_h) s_h^2 / n_h on the errors: a: 16 * 0.5 * 0.5 / 2 = 2; b: 36 * (2/3) * 0.5 / 2 = 6
    se = math.sqrt(2 + 6) / 10
    assert e.se == pytest.approx(se)
    assert 0.5 - 1.959963984540054 * se < 0 and 0.5 + 1.959963984540054 * se > 1  # a sample of 4 tells little
    assert (e.ci_low, e.ci_high) == (0.0, 1.0)  # clipped to [0, 1]
    assert (e.n_units, e.n_sample, e.positives, e.disagreements) == (10, 4, 3, 2)
    assert e.note and "fragile" in e.note  # 2 disagreements


def test_domain_uses_its_own_units_and_sampled_units_only():
    predicted = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 1])
    truth = np.array([1, 0, NAN, NAN, 1, 1, NAN, NAN, NAN, NAN])
    pi = np.array([0.5, 0.5, NAN, NAN, 1 / 3, 1 / 3, NAN, NAN, NAN, NAN])
    stratum = np.array(["a", "a", None, None, "b", "b", None, None, None, None], dtype=object)
    group = np.array([1, 0, 1, 0, 1, 1, 0, 0, 0, 0], dtype=bool)  # units 0, 2, 4, 5
    e = prevalence.estimate(predicted, truth, pi, stratum, group)
    # model's total in the group 1 + 0 + 1 + 0 = 2; errors of sampled group units: 0, 0, +1 (unit 5, pi 1/3)
    assert e.naive == pytest.approx(0.5)
    assert e.corrected == pytest.approx((2 + 3) / 4)
    # z over the strata, zero outside the group: a: 0, 0 -> 0; b: 0, 3 -> (2/3) * 2 * 4.5 = 6
    assert e.se == pytest.approx(math.sqrt(6) / 4)
    assert e.ci_high == 1.0  # clipped
    assert e.n_sample == 3


def test_unbiased_and_variance_unbiased_by_enumerating_every_stratified_sample():
    rng = np.random.default_rng(3)
    strata = np.array(["x"] * 7 + ["y"] * 6, dtype=object)
    true = rng.random(13) < 0.4
    predicted = np.where(rng.random(13) < 0.3, ~true, true).astype(int)  # a model that errs
    n_h = {"x": 3, "y": 2}
    estimates, variances = [], []
    members = {h: np.flatnonzero(strata == h) for h in n_h}
    for picks in itertools.product(*(itertools.combinations(members[h], n_h[h]) for h in n_h)):
        chosen = np.array([i for p in picks for i in p])
        truth = np.full(13, NAN)
        truth[chosen] = true[chosen]
        pi = np.full(13, NAN)
        for h in n_h:
            pi[np.intersect1d(chosen, members[h])] = n_h[h] / len(members[h])
        e = prevalence.estimate(predicted, truth, pi, np.where(np.isnan(truth), None, strata))
        estimates.append(e.corrected)
        variances.append(e.se**2)
    assert len(estimates) == math.comb(7, 3) * math.comb(6, 2)
    assert np.mean(estimates) == pytest.approx(true.mean())  # unbiased whatever the model's errors
    assert np.mean(variances) == pytest.approx(np.var(estimates))  # and so is its variance estimate


def test_census_gives_truth_with_no_uncertainty():
    predicted = np.array([0, 0, 1, 1])
    truth = np.array([1.0, 0.0, 1.0, 0.0])
    e = prevalence.estimate(predicted, truth, np.ones(4), np.array(["s"] * 4, dtype=object))
    assert (e.corrected, e.se, e.ci_low, e.ci_high) == (0.5, 0.0, 0.5, 0.5)


def test_one_unit_stratum_gives_no_interval_and_says_why():
    predicted = np.array([0, 1, 0, 1])
    truth = np.array([1.0, NAN, NAN, NAN])
    e = prevalence.estimate(predicted, truth, np.array([0.25, NAN, NAN, NAN]), np.array(["s", None, None, None]))
    assert e.corrected == pytest.approx((2 + 4) / 4)
    assert e.ci_low is None and "one sampled unit" in e.note


def test_majority_tie_counts_half_and_named_reference_is_that_coder():
    presence = {"ann": np.array([[1], [1], [0]]), "bob": np.array([[1], [0], [0]]), "cy": np.array([[0], [0], [1]])}
    rated = {"ann": np.array([1, 1, 1], bool), "bob": np.array([1, 1, 0], bool), "cy": np.array([0, 0, 1], bool)}
    got = prevalence.human_truth(presence, rated, "majority")
    assert got[:, 0].tolist() == [1.0, 0.5, 0.5]  # unit 0: 2 of 2; unit 1: 1 of 2; unit 2: ann 0, cy 1
    assert np.isnan(prevalence.human_truth(presence, rated, "bob")[2, 0])


CB = Codebook.model_validate(
    {
        "name": "t",
        "version": "1",
        "fields": [
            {"name": "topic", "type": "multiple_choice", "description": "d",
             "values": [{"name": "ppe", "definition": "d"}, {"name": "pay", "definition": "d"}]},
            {"name": "urgent", "type": "boolean", "description": "d"},
        ],
    }
)  # fmt: skip


def _table(sample, human_units, settings=None, groups=None):
    units = [f"d{i}" for i in range(6)]
    # columns: topic/ppe, topic/pay, urgent/false, urgent/true
    predicted = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0], [1, 0, 0, 1], [0, 0, 1, 0]])
    human = np.array([[1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0]], dtype=float)[: len(human_units)]
    s = {"unit": "document", "reference": "majority", "sample": "s.csv", "by": None, **(settings or {})}
    t = prevalence.prevalence_table(cb=CB, units=units, predicted=predicted, human_units=human_units, human=human,
                                    settings=s, sample=sample, groups=groups)  # fmt: skip
    return t.to_pandas()


SAMPLE = pd.DataFrame({"unit": ["d0", "d1", "d3"], "stratum": ["all"] * 3, "inclusion_probability": [0.5] * 3})


def test_table_rows_codes_and_groups():
    groups = ["nurse", "nurse", "cook", None, "cook", "nurse"]
    df = _table(SAMPLE, ["d0", "d1", "d3"], {"by": "meta_job"}, groups=groups)
    # every value of the choice field and a boolean's true; whole corpus then each group (missing named)
    assert list(df[df.by.isna()][["field", "value"]].itertuples(index=False, name=None)) == [
        ("topic", "ppe"), ("topic", "pay"), ("urgent", "true")]  # fmt: skip
    assert sorted(df.group.dropna().unique()) == ["(missing)", "cook", "nurse"]
    ppe = df[(df.value == "ppe") & df.by.isna()].iloc[0]
    # naive 3/6; errors on the sample d0 0, d1 +1, d3 0 -> HT total 2 -> (3 + 2) / 6
    assert ppe.naive == pytest.approx(0.5) and ppe.corrected == pytest.approx(5 / 6)
    assert ppe.refused is None or pd.isna(ppe.refused)
    nurse = df[(df.value == "ppe") & (df.group == "nurse")].iloc[0]
    assert (nurse.n_units, nurse.n_sample) == (3, 2)
    assert nurse.corrected == pytest.approx((1 + 0 + 0 + 2) / 3)


@pytest.mark.parametrize(
    ("sample", "human_units", "settings", "reason"),
    [
        (None, ["d0", "d1", "d3"], {"sample": None}, "no validation.sample"),
        (SAMPLE, ["d0", "d1", "d2"], {}, "not in the sample"),
        (SAMPLE, ["d0", "d1"], {}, "have no human coding"),
        (SAMPLE.assign(unit=["d0", "d1", "x9"]), ["d0", "d1", "d3"], {}, "not units of this corpus"),
    ],
)
def test_refuses_with_the_reason_when_not_a_probability_sample(sample, human_units, settings, reason):
    df = _table(sample, human_units, settings)
    assert df.refused.str.contains(reason).all()
    assert df.corrected.isna().all() and df.ci_low.isna().all()
    assert df.naive.notna().all()  # the model's prevalence is still given


def test_simple_random_sample_interval_by_hand():
    # 100 units, the model codes 30; 10 drawn at random (pi 1/10), the model missed the code on one of them
    predicted = np.zeros(100)
    predicted[:30] = 1
    truth = np.full(100, NAN)
    drawn = [0, 5, 31, 40, 50, 60, 70, 80, 90, 99]
    truth[drawn] = predicted[drawn]
    truth[31] = 1
    pi = np.where(np.isnan(truth), NAN, 0.1)
    e = prevalence.estimate(predicted, truth, pi, np.where(np.isnan(truth), None, "all"))
    assert e.corrected == pytest.approx((30 + 1 / 0.1) / 100)
    # z: one 10, nine 0 (mean 1): (1 - 0.1) * 10 / 9 * (81 + 9) = 90, or N^2 (1 - f) s^2 / n = 1e4 * 0.9 * 0.1 / 10
    se = math.sqrt(90) / 100
    assert e.se == pytest.approx(se)
    assert (e.ci_low, e.ci_high) == pytest.approx((0.4 - 1.959963984540054 * se, 0.4 + 1.959963984540054 * se))


# -- the example, end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example coded once through the workflow (its human codings, no validation.sample), then again with a
    sample file naming exactly the coded documents and validation.by; both runs' outputs are kept."""
    from conftest import _quote_the_passage
    from fakeserver import FakeServer
    from workflow_helpers import fake_config, run, scratch_copy, write_config

    work = scratch_copy(tmp_path_factory.mktemp("prevalence") / "work")
    key = {"QUALCODE_TEST_KEY": "test-" + "k" * 20}
    with FakeServer(seed=1) as server:
        server.answer_fn = _quote_the_passage
        config = fake_config(work, server)
        run(work, "--configfile", str(config), env=key)
        first = {
            "prevalence": pd.read_parquet(work / "results/prevalence.parquet"),
            "methods": (work / "results/methods.md").read_text(),
            "figure": (work / "results/report/prevalence.png").read_bytes(),
        }
        gold = pd.read_csv(work / "config/gold/coder_a.csv", dtype=str)
        docs = pd.read_parquet(work / "results/documents.parquet", columns=["doc_id"])
        drawn = sorted(gold.doc_id.unique())
        sample = pd.DataFrame({"unit": drawn, "doc_id": drawn, "stratum": "all",
                               "inclusion_probability": len(drawn) / len(docs), "seed": 7})  # fmt: skip
        sample.to_csv(work / "config/sample.csv", index=False)
        overrides = yaml.safe_load(config.read_text())
        overrides["validation"] = {"sample": "config/sample.csv", "by": "meta_occupation"}
        config = write_config(work, overrides)
        run(work, "--configfile", str(config), env=key)
        yield work, first


def _human(work, field, value):
    """By hand, from the two example files: per document, the share of the two coders who gave the value."""
    a = pd.read_csv(work / "config/gold/coder_a.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(work / "config/gold/coder_b.csv", dtype=str, keep_default_na=False)
    docs = sorted(set(a.doc_id) | set(b.doc_id))
    in_a = set(a.doc_id[(a.field == field) & (a.value.str.strip() == value)])
    in_b = {d for d, cell in zip(b.doc_id, b[field], strict=True) if value in [v.strip() for v in cell.split(";")]}
    return pd.Series([((d in in_a) + (d in in_b)) / 2 for d in docs], index=docs)


@pytest.mark.e2e
def test_example_default_run_refuses_with_the_reason(example):
    _, first = example
    df = first["prevalence"]
    assert len(df) and df.by.isna().all()
    assert df.refused.str.startswith("no validation.sample").all() and df.corrected.isna().all()
    assert "not corrected for the model's errors" in first["methods"] and "no validation.sample" in first["methods"]
    assert first["figure"][:4] == b"\x89PNG"


@pytest.mark.e2e
def test_example_with_a_sample_gives_the_hand_computed_estimate(example):
    work, _ = example
    df = pd.read_parquet(work / "results/prevalence.parquet")
    assert df.refused.isna().all()
    docs = pd.read_parquet(work / "results/documents.parquet", columns=["doc_id", "meta_occupation"])
    codes = pd.read_parquet(work / "results/codes.parquet")
    codings = pd.read_parquet(work / "results/codings.parquet", columns=["chunk_id", "status"])
    coded = codes[codes.chunk_id.isin(codings.chunk_id[codings.status == "coded"])]
    field, value = "material_conditions", "ppe_shortage"
    given = set(coded.doc_id[(coded.field == field) & (coded.value == value)])
    yhat = docs.doc_id.map(lambda d: float(d in given))
    y = _human(work, field, value)
    n, pi = len(docs), len(y) / len(docs)
    d = y - yhat[docs.doc_id.isin(y.index)].set_axis(docs.doc_id[docs.doc_id.isin(y.index)]).loc[y.index]
    corrected = (yhat.sum() + d.sum() / pi) / n
    se = np.sqrt(n**2 * (1 - pi) * d.var(ddof=1) / len(y)) / n  # stratified formula, one stratum
    row = df[(df.field == field) & (df.value == value) & df.by.isna()].iloc[0]
    assert row.naive == pytest.approx(yhat.mean())
    assert row.corrected == pytest.approx(corrected) and row.se == pytest.approx(se)
    assert row.n_sample == len(y) and row.unit == "document"
    groups = df[df.by == "meta_occupation"]
    assert set(groups.group) == set(docs.meta_occupation.fillna("(missing)"))
    methods = (work / "results/methods.md").read_text()
    assert f"human-coded probability sample (n = {len(y)} documents" in methods and "by meta_occupation" in methods
    assert (work / "results/report/prevalence.png").stat().st_size > 0


def test_an_estimate_outside_0_1_is_kept_and_said():
    # a group of 2 units, the model coded both; its one sampled unit (pi 1/2) was a false positive: 2 - 1/0.5 = 0
    # over 2 units is fine; with pi 1/4 it is (2 - 4) / 2 = -1: unbiased over draws, absurd for this one
    predicted = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    truth = np.array([0.0, NAN, 0.0, 0.0, NAN, NAN, NAN, NAN])
    pi = np.where(np.isnan(truth), NAN, 0.25)
    e = prevalence.estimate(predicted, truth, pi, np.where(np.isnan(truth), None, "s"), np.arange(8) < 2)
    assert e.corrected == pytest.approx(-1.0)
    assert "outside [0, 1]" in e.note and 0.0 <= e.ci_low <= e.ci_high <= 1.0


def test_a_bad_sample_file_stops_the_run_before_any_request(tmp_path, monkeypatch):
    from qualcode import config, preflight

    from workflow_helpers import scratch_copy

    work = scratch_copy(tmp_path / "w")
    monkeypatch.chdir(work)
    (work / "sample.csv").write_text("unit,doc_id,stratum,inclusion_probability,seed\nx,x,a,2,7\n")
    raw = yaml.safe_load((work / "config/config.yaml").read_text())
    raw["validation"]["sample"] = "sample.csv"
    raw["llm"] = {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    cfg = config.resolve(raw)
    with pytest.raises(SampleError, match=r"sample\.csv, row 2: inclusion_probability must be a number in \(0, 1\]"):
        preflight.before_reading(cfg, codebook.load(cfg.codebook))


def test_a_group_without_sampled_units_gets_no_corrected_estimate():
    predicted = np.array([1, 0, 1, 1])
    truth = np.array([1.0, 0.0, NAN, NAN])
    pi = np.array([0.5, 0.5, NAN, NAN])
    e = prevalence.estimate(predicted, truth, pi, np.array(["s", "s", None, None]), np.array([0, 0, 1, 1], bool))
    assert e.naive == 1.0 and e.corrected is None and e.ci_low is None  # not 1.0 with a zero-wide interval
    assert "no sampled unit" in e.note
