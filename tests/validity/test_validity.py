"""The validate stage's units: which raters rated which unit with which values, for documents and for chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qualcode.errors import ConfigError
from qualcode.inputs import codebook
from qualcode.validity import validation

from conftest import DATA

CB = codebook.load(DATA / "codebook.yaml")
MULTI = next(f for f in CB.fields if f.type == "multiple_choice")
CHOICE = next(f for f in CB.fields if f.type == "single_choice")
A, B = MULTI.values[0].name, MULTI.values[1].name
# two documents; d1 has two chunks [0, 50) and [40, 100), d2 one
CHUNKS = pd.DataFrame({"chunk_id": ["c1", "c2", "c3"], "doc_id": ["d1", "d1", "d2"], "start": [0, 40, 0],
                       "end": [50, 100, 30]})  # fmt: skip


def _human(rows):
    df = pd.DataFrame(rows, columns=["coder", "doc_id", "field", "value", "start", "end"])
    return df.astype({"start": "Int64", "end": "Int64"})


def _col(value):
    return validation._columns(CB).index((MULTI.name, value))


def test_document_units_take_any_chunk_and_leave_failed_documents_missing():
    human = _human([["ann", "d1", MULTI.name, A, None, None], ["ann", "d2", None, None, None, None],
                    ["ben", "d1", MULTI.name, B, None, None]])  # fmt: skip
    model = pd.DataFrame({"doc_id": ["d1"], "chunk_id": ["c2"], "field": [MULTI.name], "value": [B]})
    coded = pd.DataFrame({"chunk_id": ["c1", "c2"]})  # c3 (all of d2) failed
    units, presence, rated = validation.ratings(CB, human, CHUNKS, "document", {"model": (model, coded.chunk_id)})
    assert units == ["d1", "d2"]
    assert rated["ann"].tolist() == [True, True] and rated["ben"].tolist() == [True, False]
    assert rated["model"].tolist() == [True, False]
    assert presence["ann"][:, _col(A)].tolist() == [True, False]
    assert presence["model"][:, _col(B)].tolist() == [True, False]


def test_a_human_segment_counts_for_every_chunk_it_overlaps():
    human = _human([["ann", "d1", MULTI.name, A, 45, 48], ["ann", "d1", MULTI.name, B, 60, 70]])
    model = pd.DataFrame(columns=["doc_id", "chunk_id", "field", "value"])
    coded = pd.DataFrame({"chunk_id": ["c1", "c2", "c3"]})
    units, presence, rated = validation.ratings(CB, human, CHUNKS, "chunk", {"model": (model, coded.chunk_id)})
    assert units == ["c1", "c2"]  # the chunks of the documents the humans coded
    assert presence["ann"][:, _col(A)].tolist() == [True, True]  # 45-48 is in both chunks' overlap
    assert presence["ann"][:, _col(B)].tolist() == [False, True]
    assert rated["ann"].all() and rated["model"].all()


def test_single_choice_fields_as_a_whole_and_per_value():
    columns = validation._columns(CB)
    v0, v1 = (columns.index((CHOICE.name, v.name)) for v in CHOICE.values[:2])
    presence = {r: np.zeros((3, len(columns)), dtype=bool) for r in ("ann", "model")}
    presence["ann"][0, v0] = presence["ann"][1, v1] = True
    presence["model"][0, v0] = presence["model"][0, v1] = True  # two values: ambiguous for the whole field
    presence["model"][1, v1] = True
    rated = {"ann": np.array([True, True, True]), "model": np.array([True, True, False])}
    codes = {(c.field, c.value): c for c in validation.codes_for_raters(CB, presence, rated)}
    whole = codes[CHOICE.name, None].ratings
    assert whole[:, 0].tolist() == [0, 1, -1] and whole[:, 1].tolist() == [-1, 1, -1]
    assert codes[CHOICE.name, CHOICE.values[0].name].ratings[:, 1].tolist() == [1, 0, -1]


def test_reference_must_be_a_coder():
    presence = {r: np.zeros((2, len(validation._columns(CB))), dtype=bool) for r in ("ann", "ben", "model")}
    rated = {r: np.ones(2, dtype=bool) for r in presence}
    with pytest.raises(ConfigError, match=r"validation.reference: 'cid' is not one of the human coders \(ann, ben\)"):
        validation.agreement_tables(CB, presence, rated, "cid", 10, 1)
    built = validation.agreement_tables(CB, presence, rated, "ann", 10, 1)
    assert set(built["agreement"].column("rater_b").to_pylist()) >= {"ann", "ben"}


@pytest.mark.e2e
def test_the_example_run_writes_agreement_the_plot_and_the_methods_sentences(tmp_path, fake_server):
    import pyarrow.parquet as pq
    import yaml

    from qualcode.outputs import tables

    from workflow_helpers import fake_config, run, scratch_copy, write_config

    workdir = scratch_copy(tmp_path / "wf")
    cfg = fake_config(workdir, fake_server)
    run(workdir, "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": "loopback"})
    results = workdir / "results"
    for name in tables.VALIDATION:
        assert pq.read_schema(results / f"{name}.parquet").remove_metadata() == tables.schema(name)
    a = pd.read_parquet(results / "agreement.parquet")
    settings = yaml.safe_load((workdir / "config/config.yaml").read_text())["validation"]
    coders = sorted({c for p in settings["gold"] for c in pd.read_csv(workdir / p).get("coder", [Path(p).stem])})
    pairs = set(zip(a.rater_a, a.rater_b.fillna(""), strict=True))
    assert (coders[0], coders[1]) in pairs and ("model", "majority") in pairs
    alpha = a[(a.metric == "krippendorff_alpha") & (a.rater_a == "model") & (a.rater_b == "majority")]
    assert alpha.assessment.notna().any()
    assert (results / "report/agreement.png").stat().st_size > 0
    page = (results / "report/agreement.html").read_text()
    assert ("is poor" in page) == (alpha.assessment == "poor").any()
    methods = (results / "methods.md").read_text()
    assert f"{len(coders)} human coder(s) ({', '.join(coders)})" in methods
    assert "agreement.parquet" in methods

    # a pilot of the same corpus: the human codings of documents outside its sample are left out, not errors
    pilot = write_config(workdir, {**yaml.safe_load(cfg.read_text()), "pilot": {"documents": 3},
                                   "results_dir": "results_pilot"})  # fmt: skip
    run(workdir, "results_pilot/agreement.parquet", "--configfile", str(pilot), env={"QUALCODE_TEST_KEY": "loopback"})
    sampled = set(pd.read_parquet(workdir / "results_pilot/documents.parquet").doc_id)
    log = (workdir / "results_pilot/logs/validate/validate.log").read_text()
    for path in settings["gold"]:
        human = pd.read_csv(workdir / path)
        outside = human[~human.doc_id.isin(sampled)]
        assert len(outside) > 0  # the example's coders coded more than 3 documents
        assert f"{path}: {len(outside)} rows about {outside.doc_id.nunique()} documents outside this pilot's " \
            "sample left out" in log  # fmt: skip


def test_replicate_one_keeps_the_keys_of_caches_made_before_replicates():
    import hashlib
    import json

    from qualcode.records import LLMRequest

    fields = dict(provider="openai", base_url="http://x/v1", model="m", messages=({"role": "user", "content": "hi"},),
                  temperature=0.0, top_p=1.0, max_tokens=64, seed=1, response_format=None, extra_body={})  # fmt: skip
    before = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert LLMRequest(**fields).key() == before
    second = LLMRequest(**fields, replicate=2)
    assert second.key() not in (before, LLMRequest(**fields, replicate=3).key())
    assert LLMRequest.model_validate_json(second.canonical()).key() == second.key()  # the archive's round trip


@pytest.mark.e2e
def test_arms_and_replicates_send_only_their_own_requests(tmp_path, fake_server):
    from workflow_helpers import fake_config, run, scratch_copy, write_config

    wd = scratch_copy(tmp_path / "wf", data=False)
    raw = wd / "data" / "raw"
    raw.mkdir(parents=True)
    texts = {"a.txt": "R: We reused masks all week and I was scared.", "b.txt": "R: My colleague covered my shift."}
    for name, text in texts.items():
        (raw / name).write_text(text)
    (wd / "gold.csv").write_text("coder,doc_id,field,value\nann,a.txt,emotions,fear\nann,b.txt,emotions,none\n"
                                 "ben,a.txt,emotions,fear\nben,b.txt,,\n")  # fmt: skip
    env = {"QUALCODE_TEST_KEY": "loopback"}
    base = fake_config(wd, fake_server)
    overrides = yaml.safe_load(base.read_text())

    def with_validation(**validation):
        return write_config(wd, {**overrides, "validation": {"gold": ["gold.csv"], "bootstrap": 50, **validation}})

    target = "results/stability.parquet"  # the validate stage alone: no manifest, methods or report to wait for
    run(wd, target, "--configfile", str(with_validation()), env=env)
    n = fake_server.count()
    assert n == len(texts)  # one chunk per document
    arm = {"other": {"llm": {"model": "fake-model-2"}}}
    run(wd, target, "--configfile", str(with_validation(arms=arm)), env=env)
    assert fake_server.count() == 2 * n  # the arm's requests only
    run(wd, "--configfile", str(with_validation(arms=arm)), "--forcerun", "code_variant", "--until", "code_variant",
        env=env)  # fmt: skip
    assert fake_server.count() == 2 * n  # the arm's coding jobs ran again, from the cache
    arm_calls = "results/arms/other/llm_calls.parquet"
    run(wd, target, arm_calls, "--configfile", str(with_validation(arms=arm, replicates=2)), env=env)
    assert fake_server.count() == 4 * n  # a second replicate of the run's model and of the arm
    calls = pd.read_parquet(wd / arm_calls)
    assert len(calls) == n and set(calls.model_asked) == {"fake-model-2"} and calls.cache_hit.all()
    results = wd / "results"
    a = pd.read_parquet(results / "agreement.parquet")
    pairs = set(zip(a.rater_a, a.rater_b, strict=True))
    assert {("model", "other"), ("model", "majority"), ("other", "majority"), ("ann", "ben")} <= pairs
    s = pd.read_parquet(results / "stability.parquet")
    assert set(s.rater) == {"model", "other"}
    assert set(s.metric) >= {"krippendorff_alpha", "share_changed"}
    assert (s[s.metric == "share_changed"].n_units == len(texts)).all()


def _agreement_table(models=("model",)):
    from qualcode.validity import agreement

    rng = np.random.default_rng(2)
    truth = rng.integers(0, 2, 50)
    cols = [truth, truth] + [rng.integers(0, 2, 50) for _ in models]  # two humans who agree, models who guess
    code = agreement.Code("emotions", "fear", ("absent", "present"), np.column_stack(cols))
    rows, _ = agreement.evaluate([code], ["ann", "ben", *models], list(models), "majority",
                                 agreement.bootstrap_weights(50, 20, 1))  # fmt: skip
    return pd.DataFrame(rows)


def test_methods_and_report_say_when_a_model_agrees_poorly(tmp_path):
    from qualcode.reporting import agreement, methods

    table = _agreement_table(("model", "big"))
    settings = {"unit": "document", "reference": "majority", "bootstrap": 20, "seed": 1, "replicates": 1,
                "arms": {"big": {"llm": {"model": "big-model"}, "prompts": {}}}}  # fmt: skip
    text = methods.validation_paragraph(table, settings)
    assert "2 human coder(s) (ann, ben)" in text and "arm(s)" in text and "big (model big-model)" in text
    assert "Between arm big and the human coders' majority" in text and "too low to rely on" in text
    assert methods.validation_paragraph(table.iloc[0:0], {**settings, "arms": {}}) is None
    page = tmp_path / "agreement.html"
    agreement.agreement_html(table, pd.DataFrame(), "majority", page, ["model", "big"])
    html = page.read_text()
    assert "Agreement between the model and majority is poor" in html and "arm big" in html
    agreement.plot_agreement(table, "majority", tmp_path / "forest.png", ["model", "big"])
    assert (tmp_path / "forest.png").stat().st_size > 0
    rows = agreement.forest(table, "majority", ["model", "big"])
    assert set(rows.comparison) == {"human-human", "model vs majority", "big vs majority"}


def test_the_same_codings_give_the_same_bytes(tmp_path):
    from qualcode.outputs import tables

    presence = {r: np.random.default_rng(i).random((30, len(validation._columns(CB)))) < 0.3
                for i, r in enumerate(("ann", "ben", "model"))}  # fmt: skip
    rated = {r: np.ones(30, dtype=bool) for r in presence}
    for name in ("one", "two"):
        built = validation.agreement_tables(CB, presence, rated, "majority", 200, 7)
        tables.write(built["agreement"], tmp_path / f"{name}.parquet")
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()
