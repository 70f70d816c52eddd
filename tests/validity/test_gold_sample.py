"""The validation sample: its size, its allocation, its inclusion probabilities, its blind sheet and its project."""

from __future__ import annotations

import itertools
import json
import math

import pandas as pd
import pytest
import yaml
from scipy.stats import norm

from qualcode.inputs import codebook
from qualcode.outputs import tables
from qualcode.validity import gold, sampling

from conftest import DATA

CB = codebook.load(DATA / "codebook.yaml")
DRAW = {"size": None, "target": "prevalence", "half_width": 0.05, "confidence": 0.95, "prevalence": 0.5,
        "kappa": 0.6, "stratify_by": None, "by_codes": False, "min_per_stratum": 1, "seed": 3}  # fmt: skip


def test_the_size_for_a_prevalence_and_for_kappa_follows_the_stated_formulas():
    z = norm.ppf(0.975)
    n0 = z**2 * 0.25 / 0.05**2  # 384.1
    assert sampling.sample_size(DRAW, 1000)["n"] == math.ceil(n0 / (1 + (n0 - 1) / 1000)) == 278
    assert sampling.sample_size(DRAW, 10**9)["n"] == 385  # no correction to speak of
    assert sampling.sample_size(DRAW, 50)["n"] <= 50
    # kappa 0.6 of a code of prevalence 0.2: pe = 0.04 + 0.64, po = pe + 0.6 (1 - pe)
    pe = 0.2**2 + 0.8**2
    po = pe + 0.6 * (1 - pe)
    n0 = z**2 * po * (1 - po) / (0.1**2 * (1 - pe) ** 2)
    got = sampling.sample_size({**DRAW, "target": "kappa", "prevalence": 0.2, "half_width": 0.1}, 5000)
    assert got["n"] == math.ceil(n0 / (1 + (n0 - 1) / 5000)) and "po(1-po)" in got["formula"]
    assert sampling.sample_size({**DRAW, "size": 40}, 30)["n"] == 30


def test_allocation_takes_the_minimum_then_shares_the_rest_by_size():
    # a: 6, b: 3, c: 1; n 6, at least 1 each: 1+1+1, then 3 more over a and b in proportion 6:3 -> 2 and 1
    assert sampling.allocate({"a": 6, "b": 3, "c": 1}, 6, 1) == {"a": 3, "b": 2, "c": 1}
    assert sampling.allocate({"a": 6, "b": 3, "c": 1}, 100, 1) == {"a": 6, "b": 3, "c": 1}
    assert sampling.allocate({"a": 50, "b": 2}, 10, 5) == {"a": 8, "b": 2}
    assert sum(sampling.allocate({"a": 7, "b": 5, "c": 4}, 9, 0).values()) == 9


def _small_frame():
    units = [f"u{i}" for i in range(10)]
    strata = ["a"] * 6 + ["b"] * 3 + ["c"]
    return pd.DataFrame({"unit": units, "doc_id": units, "stratum": strata})


def test_inclusion_probabilities_equal_the_share_of_all_possible_samples_holding_the_unit():
    units = _small_frame()
    sample = sampling.draw(units, 6, 1, seed=11)
    alloc = {"a": 3, "b": 2, "c": 1}  # by hand, as in the test above
    # every sample of the design: alloc[h] of each stratum's units, all combinations equally likely
    per_stratum = [list(itertools.combinations(units.unit[units.stratum == h], k)) for h, k in alloc.items()]
    samples = [set(itertools.chain(*parts)) for parts in itertools.product(*per_stratum)]
    pi = {u: sum(u in s for s in samples) / len(samples) for u in units.unit}
    assert set(sample.unit) in samples
    assert dict(zip(sample.unit, sample.inclusion_probability, strict=True)) == pytest.approx(
        {u: pi[u] for u in sample.unit}, abs=1e-12
    )
    assert set(sample.seed) == {11}
    # and the draw makes them so: over many seeds each unit is drawn at its probability
    seen = pd.concat([sampling.draw(units, 6, 1, seed=s).unit for s in range(2000)]).value_counts() / 2000
    for u in units.unit:
        assert seen.get(u, 0) == pytest.approx(pi[u], abs=0.045)  # 4 standard errors at most


def test_the_sample_is_reproducible_from_its_seed():
    units = pd.DataFrame({"unit": [f"d{i:03d}" for i in range(200)], "doc_id": [f"d{i:03d}" for i in range(200)],
                          "stratum": ["all"] * 200})  # fmt: skip
    one, two = sampling.draw(units, 30, 0, 5), sampling.draw(units, 30, 0, 5)
    pd.testing.assert_frame_equal(one, two)
    assert set(sampling.draw(units, 30, 0, 6).unit) != set(one.unit)
    assert len(one) == 30 and (one.inclusion_probability == 30 / 200).all()


def _corpus(n_docs=40):
    docs = pd.DataFrame({"doc_id": [f"d{i:02d}" for i in range(n_docs)],
                         "meta_site": ["north" if i % 4 else "south" for i in range(n_docs)],
                         "text": [f"Document {i} says something." for i in range(n_docs)]})  # fmt: skip
    chunks = pd.DataFrame({"chunk_id": [f"c{i:02d}" for i in range(n_docs)], "doc_id": docs.doc_id,
                           "start": 0, "end": docs.text.str.len(), "text": docs.text})  # fmt: skip
    # the model found fear in three documents, pride in most, own_health true in one; its summaries are not codes
    rows = [(f"c{i:02d}", "emotions", "fear") for i in (1, 2, 3)]
    rows += [(f"c{i:02d}", "emotions", "pride") for i in range(0, n_docs, 2)]
    rows += [("c05", "own_health", "true"), ("c06", "own_health", "false"), ("c07", "summary", "anything")]
    codes = pd.DataFrame(rows, columns=["chunk_id", "field", "value"])
    return docs, chunks, codes


def test_rare_codes_and_metadata_make_strata():
    docs, chunks, codes = _corpus()
    units = sampling.frame(docs, chunks, "document", "site", sampling.positives(CB, codes))
    by = dict(zip(units.unit, units.stratum, strict=True))
    assert by["d01"] == "site=north | emotions=fear"  # rarest code of d01..d03 (fear: 3 units, pride: 20)
    assert by["d02"] == "site=north | emotions=fear"  # fear beats pride on d02
    assert by["d05"] == "site=north | own_health=true" and by["d04"] == "site=south | emotions=pride"
    assert by["d07"] == "site=north | (no code)"  # a summary is no code; own_health false is no presence
    sample = sampling.draw(units, 12, 2, 1)
    drawn = sample.stratum.value_counts()
    assert drawn["site=north | emotions=fear"] == 2 and drawn["site=north | own_health=true"] == 1
    with pytest.raises(Exception, match="no metadata column 'region'.*meta_site"):
        sampling.frame(docs, chunks, "document", "region")


def _write_corpus(tmp_path, docs, chunks):
    from qualcode.records import Chunk, Document

    documents = [Document(doc_id=d.doc_id, source_file=f"{d.doc_id}.txt", format="txt", encoding="utf-8",
                          text=d.text, metadata={"site": d.meta_site}) for d in docs.itertuples()]  # fmt: skip
    tables.write(tables.documents_table(documents), tmp_path / "documents.parquet")
    recs = [Chunk(c.chunk_id, c.doc_id, 0, int(c.start), int(c.end), 5, (), c.text) for c in chunks.itertuples()]
    tables.write(tables.chunks_table(recs), tmp_path / "chunks.parquet")


@pytest.mark.parametrize("unit", ["document", "chunk"])
def test_the_blind_sheet_holds_no_model_code_and_reads_back_as_gold(tmp_path, unit):
    from qualcode.exchange import qdpx

    docs, chunks, codes = _corpus()
    _write_corpus(tmp_path, docs, chunks)
    rows = chunks.merge(codes, on="chunk_id")
    code_table = tables.CODES.empty_table().to_pandas()
    code_table = pd.DataFrame({c: rows.get(c) for c in code_table.columns})
    code_table = code_table.assign(chunk_index=0, grounding="none", grounded=False)
    tables.write(pa_table(code_table), tmp_path / "codes.parquet")
    out = {
        k: tmp_path / "gold_sample" / f
        for k, f in (
            ("sample", "sample.csv"),
            ("sheet", "sheet.csv"),
            ("qdpx", "sample.qdpx"),
            ("design", "design.json"),
        )
    }
    settings = {"unit": unit, "draw": {**DRAW, "size": 10, "by_codes": True, "min_per_stratum": 1},
                "holdout": 0.3, "holdout_seed": 9}  # fmt: skip
    design = sampling.write_gold_sample(cb=CB, documents=tmp_path / "documents.parquet",
                                        chunks=tmp_path / "chunks.parquet", codes=tmp_path / "codes.parquet",
                                        settings=settings, out=out)  # fmt: skip
    sample = sampling.read_sample(out["sample"])
    assert len(sample) == design["drawn"] == 10 and list(sample.columns) == sampling.SAMPLE_COLUMNS
    assert json.loads(out["design"].read_text())["strata"] == design["strata"]
    expected = sampling.splits(sample.unit.tolist(), 0.3, 9)
    assert sample.split.tolist() == expected
    sheet = pd.read_csv(out["sheet"], dtype=str, keep_default_na=False, encoding="utf-8-sig")
    fields = [f.name for f in CB.fields if f.type != "text"]
    assert (sheet[fields] == "").all().all()  # no model code, nor anything else, in the coders' columns
    assert "summary" not in sheet.columns
    assert sheet.doc_id.tolist() == sample.doc_id.tolist()
    texts = dict(zip(docs.doc_id, docs.text, strict=True))
    # a coder fills it in: fear on the first unit, nothing on the others
    filled = sheet.copy()
    filled.loc[0, "emotions"] = "fear"
    path = tmp_path / "ann.csv"
    filled.to_csv(path, index=False)
    human, problems = gold.load([path], CB, texts, unit=unit)
    assert problems == []
    assert set(human.coder) == {"ann"} and set(human.doc_id) == set(sample.doc_id)
    coded = human[human.field.notna()]
    assert coded[["doc_id", "field", "value"]].values.tolist() == [[sample.doc_id[0], "emotions", "fear"]]
    if unit == "chunk":  # placed on the sampled chunk
        chunk = chunks.set_index("chunk_id").loc[sample.unit[0]]
        assert (int(coded.start.iloc[0]), int(coded.end.iloc[0])) == (chunk.start, chunk.end)
    # the project: the sampled documents, with no coding
    project = qdpx.read_gold(out["qdpx"], CB, texts)
    assert project[project.field.notna()].empty
    with __import__("zipfile").ZipFile(out["qdpx"]) as zf:
        assert len([n for n in zf.namelist() if n.startswith("sources/")]) == sample.doc_id.nunique()


def pa_table(df):
    import pyarrow as pa

    return pa.Table.from_pandas(df, schema=tables.CODES, preserve_index=False)


def test_a_sample_file_that_is_not_one_is_refused(tmp_path):
    path = tmp_path / "sample.csv"
    path.write_text("doc_id,stratum\nd1,all\n")
    with pytest.raises(sampling.SampleError, match="no column.*unit.*gold_sample"):
        sampling.read_sample(path)
    path.write_text("unit,doc_id,stratum,inclusion_probability,seed\nd1,d1,all,0,1\n")
    with pytest.raises(sampling.SampleError, match="row 2: inclusion_probability"):
        sampling.read_sample(path)


def test_the_config_takes_the_sample_settings():
    from qualcode import config

    raw = yaml.safe_load((DATA.parent.parent / "config" / "config.yaml").read_text())
    raw["validation"].update(holdout=0.25, lock="ab" * 6, sample="gold/sample.csv",
                             draw={"half_width": 0.1, "stratify_by": "site", "by_codes": True})  # fmt: skip
    cfg = config.resolve(raw)
    assert cfg.validation.draw.half_width == 0.1 and cfg.validation.holdout == 0.25
    with pytest.raises(Exception, match="lock"):
        config.resolve({**raw, "validation": {**raw["validation"], "lock": "not-a-hash"}})


@pytest.mark.e2e
def test_the_gold_sample_target_draws_from_the_run_by_occupation_and_the_models_codes(tmp_path, fake_server):
    from workflow_helpers import fake_config, run, scratch_copy

    workdir = scratch_copy(tmp_path / "wf")
    draw = {"size": 12, "stratify_by": "occupation", "by_codes": True, "min_per_stratum": 1, "seed": 4}
    cfg = fake_config(workdir, fake_server, validation={"draw": draw})
    run(workdir, "gold_sample", "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": "loopback"})
    out = workdir / "results" / "gold_sample"
    sample = sampling.read_sample(out / "sample.csv")
    docs = pd.read_parquet(workdir / "results/documents.parquet")
    codes = pd.read_parquet(workdir / "results/codes.parquet")
    # the frame by hand: each document's occupation and its rarest code among the model's presences
    kinds = {f.name: f.type for f in codebook.load(workdir / "config/codebook.yaml").fields}
    present = codes[codes.field.map(kinds).isin(["single_choice", "multiple_choice"])
                    | ((codes.field.map(kinds) == "boolean") & (codes.value == "true"))]  # fmt: skip
    pairs = set(zip(present.doc_id, present.field + "=" + present.value, strict=True))
    count = pd.Series([c for _, c in pairs]).value_counts()
    stratum = {}
    for d, occupation in zip(docs.doc_id, docs.meta_occupation, strict=True):
        mine = sorted((count[c], c) for doc, c in pairs if doc == d)
        code = mine[0][1] if mine else "(no code)"
        stratum[d] = f"occupation={occupation if isinstance(occupation, str) else '(none)'} | {code}"
    sizes = pd.Series(stratum).value_counts()
    assert sample.stratum.tolist() == [stratum[d] for d in sample.doc_id]
    for row in sample.itertuples():
        assert row.stratum_size == sizes[row.stratum]
        assert row.inclusion_probability == pytest.approx(row.stratum_drawn / sizes[row.stratum])
    drawn = sample.stratum.value_counts()
    assert all(drawn[s] == k for s, k in sample.groupby("stratum").stratum_drawn.first().items())
    assert len(sample) == max(12, len(sizes))  # every stratum gives one at least
    # the blind sheet names the sampled documents and holds none of the model's codes
    sheet = pd.read_csv(out / "sheet.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert sheet.doc_id.tolist() == sample.doc_id.tolist()
    coded = [c for c in sheet.columns if c in kinds]
    assert coded and (sheet[coded] == "").all().all()
    design = json.loads((out / "design.json").read_text())
    assert design["drawn"] == len(sample) and design["population"] == len(docs)
    # the same settings draw the same sample
    before = (out / "sample.csv").read_bytes()
    run(workdir, "gold_sample", "--forcerun", "gold_sample", "--configfile", str(cfg),
        env={"QUALCODE_TEST_KEY": "loopback"})  # fmt: skip
    assert (out / "sample.csv").read_bytes() == before
