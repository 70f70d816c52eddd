"""Refining the codebook (issue 27): the history of agreement per codebook version, which survives new runs and
reaches the methods text; `snakemake refine`, whose proposed codebook validates and whose rerun sends nothing."""

from __future__ import annotations

import json

import jsonschema
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from qualcode.inputs.codebook import Codebook
from qualcode.negotiation import refine
from qualcode.outputs import tables
from qualcode.reporting import methods
from qualcode.validity import history

from conftest import _quote_the_passage
from fakeserver import FakeServer
from workflow_helpers import REPO, fake_config, run, scratch_copy

KEY = {"QUALCODE_TEST_KEY": "test-" + "k" * 20}


def _codebook(version: str) -> Codebook:
    return Codebook.model_validate({"name": "cb", "version": version, "fields": [
        {"name": "mood", "type": "multiple_choice", "description": "d", "values": [
            {"name": "calm", "definition": "c"}, {"name": "angry", "definition": "a"}]}]})  # fmt: skip


def _agreement(kappas: dict[str, float], n: int) -> pd.DataFrame:
    rows = []
    for value, k in kappas.items():
        for a, b in (("model", "majority"), ("ann", "bob"), ("model", None)):
            metric = "prevalence" if b is None else "cohen_kappa"
            rows.append({"field": "mood", "value": value, "rater_a": a, "rater_b": b, "metric": metric,
                         "estimate": k, "ci_low": None, "ci_high": None, "n_units": n, "assessment": None,
                         "split": "all"})  # fmt: skip
    return pa.Table.from_pylist(rows, schema=tables.AGREEMENT).to_pandas()


def _run(tmp_path, version: str, kappas: dict[str, float], n: int, when: str) -> pd.DataFrame:
    cb_path = tmp_path / f"codebook-{version}.yaml"
    cb_path.write_text(f"version: {version}\n")  # the hash is the file's: any two texts differ
    agreement = tmp_path / "agreement.parquet"
    tables.write(pa.Table.from_pandas(_agreement(kappas, n), schema=tables.AGREEMENT, preserve_index=False), agreement)
    return history.update(agreement=agreement, codebook=_codebook(version), codebook_path=cb_path,
                          store=tmp_path / "history" / "h.parquet", out=tmp_path / "results" / "h.parquet",
                          now=when)  # fmt: skip


def test_two_codebook_versions_give_two_rows_per_code_and_a_rerun_replaces_its_own(tmp_path):
    (tmp_path / "results").mkdir()
    _run(tmp_path, "1.0", {"calm": 0.2, "angry": 0.5}, 30, "2026-01-01T00:00:00+00:00")
    _run(tmp_path, "1.0", {"calm": 0.25, "angry": 0.5}, 31, "2026-01-02T00:00:00+00:00")  # the same codebook again
    h = _run(tmp_path, "2.0", {"calm": 0.7, "angry": 0.6}, 28, "2026-01-03T00:00:00+00:00")
    # the store outside results/ holds the same as the run's copy
    assert h.equals(pd.read_parquet(tmp_path / "history" / "h.parquet"))
    assert h.equals(pd.read_parquet(tmp_path / "results" / "h.parquet"))
    kappa = h[(h.rater_a == "model") & (h.metric == "cohen_kappa")]
    per_code = kappa.groupby("value").size()
    assert per_code.to_dict() == {"angry": 2, "calm": 2}
    assert (h.metric != "prevalence").all()  # pairs only
    first = kappa[kappa.revision == 1].set_index("value")
    assert first.at["calm", "estimate"] == 0.25 and first.at["calm", "n_units"] == 31  # the rerun replaced
    assert first.at["calm", "recorded_at"] == "2026-01-02T00:00:00+00:00"
    assert set(kappa[kappa.revision == 2].codebook_version) == {"2.0"}

    text = methods.validation_paragraph(
        _agreement({"calm": 0.7, "angry": 0.6}, 28),
        {"reference": "majority", "unit": "document", "bootstrap": 0, "seed": 1},
        None,
        h,
    )
    assert "revised 1 time" in text
    assert "1.0 (n = 31)" in text and "2.0 (n = 28)" in text
    assert "mood: calm from 0.25 (n = 31) to 0.70 (n = 28)" in text


def test_one_version_says_it_was_not_revised(tmp_path):
    (tmp_path / "results").mkdir()
    h = _run(tmp_path, "1.0", {"calm": 0.2, "angry": 0.5}, 30, "2026-01-01T00:00:00+00:00")
    assert "has not been revised" in history.revisions_text(h)
    assert history.revisions_text(h.iloc[0:0]) is None


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """The example through the whole workflow (fake server) with codebook 1.0, then again with a revised codebook
    (2.0, one definition changed); the server stays up to count later requests."""
    work = scratch_copy(tmp_path_factory.mktemp("refine") / "work")
    with FakeServer(seed=1) as server:
        server.answer_fn = _quote_the_passage
        config = fake_config(work, server, validation={"gold": ["config/gold/coder_a.csv", "config/gold/coder_b.csv"],
                                                       "bootstrap": 20})  # fmt: skip
        run(work, "--configfile", str(config), env=KEY)
        first = pd.read_parquet(work / "results/agreement.parquet")
        path = work / "config/codebook.yaml"
        text = path.read_text()
        path.write_text(text.replace('version: "1.0"', 'version: "2.0"').replace(
            "Fear or anxiety about infection", "Fear, dread or anxiety about infection"))  # fmt: skip
        run(work, "--configfile", str(config), env=KEY)
        yield work, server, config, first


@pytest.mark.e2e
def test_two_runs_with_two_codebook_versions_give_two_rows_per_code_and_methods_reports_both(two_versions):
    work, _, _, first = two_versions
    h = pd.read_parquet(work / "results/agreement_history.parquet")
    assert h.equals(pd.read_parquet(work / "history/agreement_history.parquet"))
    second = pd.read_parquet(work / "results/agreement.parquet")
    pairs = second[second.rater_b.notna()]
    per_code = h.groupby(["field", "value", "rater_a", "rater_b", "metric"], dropna=False).size()
    assert (per_code == 2).all() and len(per_code) == len(pairs)
    assert sorted(set(zip(h.revision, h.codebook_version, strict=True))) == [(1, "1.0"), (2, "2.0")]
    # each revision's rows are that run's agreement
    for revision, run_rows in ((1, first), (2, second)):
        mine = h[h.revision == revision].sort_values(["field", "value", "rater_a", "rater_b", "metric"])
        want = run_rows[run_rows.rater_b.notna()].sort_values(["field", "value", "rater_a", "rater_b", "metric"])
        assert list(mine.estimate.fillna(-9)) == list(want.estimate.fillna(-9))
        assert list(mine.n_units) == list(want.n_units)
    methods_md = (work / "results/methods.md").read_text()
    n1 = int(first[(first.rater_a == "model") & (first.rater_b == "majority") & (first.metric == "cohen_kappa")]
             .n_units.max())  # fmt: skip
    n2 = int(pairs[(pairs.rater_a == "model") & (pairs.rater_b == "majority") & (pairs.metric == "cohen_kappa")]
             .n_units.max())  # fmt: skip
    assert "The codebook was revised 1 time" in methods_md
    assert f"1.0 (n = {n1})" in methods_md and f"2.0 (n = {n2})" in methods_md
    page = (work / "results/report/agreement.html").read_text()
    assert "Agreement by codebook revision" in page and "2: version 2.0" in page


@pytest.mark.e2e
def test_refine_writes_a_valid_codebook_and_a_forced_rerun_sends_nothing(two_versions):
    pytest.importorskip("qualcode.coding.asker")
    work, server, config, _ = two_versions
    before = len(server.requests)
    run(work, "refine", "--configfile", str(config), env=KEY)
    sent = len(server.requests) - before
    assert sent >= 1
    proposed = yaml.safe_load((work / "results/refine/codebook.proposed.yaml").read_text())
    schema = json.loads((REPO / "schemas/codebook.schema.json").read_text())
    jsonschema.validate(proposed, schema)
    Codebook.model_validate(proposed)
    assert proposed["version"] == "2.0+proposed"
    changes = (work / "results/refine/changes.md").read_text()
    assert "Disagreements this answers" in changes and "```diff" in changes
    run(work, "refine", "--forcerun", "refine", "--configfile", str(config), env=KEY)
    assert len(server.requests) - before == sent  # every answer from the cache


def test_examples_are_kept_only_when_found_in_a_passage_in_its_own_words():
    passages = ["She said: I was Terrified of   catching it, every day.", "Nothing else here."]
    kept, dropped = refine.grounded_examples(["i was terrified of catching it", "made up words"], passages)
    assert kept == ["I was Terrified of   catching it"] and dropped == ["made up words"]


def test_the_lowest_agreement_codes_against_the_majority_come_first():
    a = _agreement({"calm": 0.6, "angry": 0.1}, 20)
    a = pd.concat([a, a.assign(value="bored", estimate=None)], ignore_index=True)
    got = refine.lowest_agreement(a, pd.DataFrame(columns=list(tables.DISAGREEMENTS.names)), 2)
    assert [(t.value, t.estimate) for t in got] == [("angry", 0.1), ("calm", 0.6)]  # undefined kappas last
