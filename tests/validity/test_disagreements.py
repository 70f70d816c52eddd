"""Disagreements as a worklist (issue 27): every unit, field and pair of sources that disagree, no more, no fewer,
checked against an independent pandas computation from the same codings; on the gwusec two-coder data and on the
example run through the real workflow (fake server), with a review's decisions flowing back as the gold source
`consensus` without a request."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml
from lxml import html

from qualcode.exchange import qdpx
from qualcode.inputs import codebook as codebook_mod
from qualcode.validity import disagreements, gold

from conftest import _quote_the_passage
from fakeserver import FakeServer
from workflow_helpers import REPO, fake_config, run, scratch_copy

GWUSEC = REPO.parent.parent / "shared" / "extdata" / "gwusec_proctoring_openended"
if not GWUSEC.is_dir():
    GWUSEC = Path("/work/shared/extdata/gwusec_proctoring_openended")
KEY = {"QUALCODE_TEST_KEY": "test-" + "k" * 20}
PAIR_COLUMNS = ["unit", "field", "source_a", "value_a", "source_b", "value_b"]


def _value_sets(rows: pd.DataFrame, source: str, rated: set[str], fields: list[str]) -> pd.DataFrame:
    """One row per rated unit and field: the values given, sorted by the order given in `order`."""
    given = rows.groupby(["unit", "field"])["value"].agg(frozenset)
    out = [
        {"unit": u, "field": f, "source": source, "given": given.get((u, f), frozenset())}
        for u in sorted(rated)
        for f in fields
    ]
    return pd.DataFrame(out, columns=["unit", "field", "source", "given"])


def _expected(sets: pd.DataFrame, pairs: list[tuple[str, str]], order: dict[str, list[str]]) -> pd.DataFrame:
    """Independently: every pair of sources that both rated a unit and whose value sets for a field differ."""
    rows = []
    for a, b in pairs:
        m = sets[sets.source == a].merge(sets[sets.source == b], on=["unit", "field"], suffixes=("_a", "_b"))
        m = m[m.given_a != m.given_b]
        for r in m.itertuples():
            text = {s: "; ".join(v for v in order[r.field] if v in vals)
                    for s, vals in (("a", r.given_a), ("b", r.given_b))}  # fmt: skip
            rows.append({"unit": r.unit, "field": r.field, "source_a": a, "value_a": text["a"], "source_b": b,
                         "value_b": text["b"]})  # fmt: skip
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def _same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    key = sorted(map(tuple, got[PAIR_COLUMNS].astype(str).to_numpy()))
    assert len(key) == len(set(key)), "a disagreement is listed twice"
    assert key == sorted(map(tuple, want[PAIR_COLUMNS].astype(str).to_numpy()))


def _gwusec():
    spec = importlib.util.spec_from_file_location("validity_gwusec", REPO / "benchmarks" / "validity_gwusec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read(GWUSEC)


@pytest.mark.skipif(not GWUSEC.is_dir(), reason="the gwusec data (shared/extdata) is not here")
def test_gwusec_two_coders_every_disagreement_no_more_no_fewer():
    human, texts, cb = _gwusec()
    checked, _ = gold.check(human, "gwusec", cb, texts, "document", "fail")
    docs = sorted(texts)
    got = disagreements.disagreements(cb, checked, pd.DataFrame(columns=["chunk_id", "doc_id", "start", "end"]),
                                      docs, "document", {})  # fmt: skip
    fields = [f.name for f in cb.fields]
    order = {f.name: [v.name for v in f.values] for f in cb.fields}
    h = human.rename(columns={"doc_id": "unit"})
    sets = pd.concat([_value_sets(h[h.coder == c], c, set(h.unit[h.coder == c]), fields)
                      for c in ("primary", "secondary")])  # fmt: skip
    want = _expected(sets, [("primary", "secondary")], order)
    assert len(want) > 50  # the coders disagree on many responses: the comparison is not vacuous
    _same_rows(got, want)
    # two sources per disagreement, so the order falls to rarity: the disputed code given on fewest units first
    given = human.groupby(["field", "value"]).doc_id.nunique()
    rarity = [min(given[(f, v)] for v in d.split("; ")) for f, d in zip(got.field, got.disputed, strict=True)]
    assert rarity == sorted(rarity)
    assert (got.n_sources == 2).all() and got.doc_id.equals(got.unit)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example corpus coded through the workflow, twice per chunk (replicates), then reviewed: a review.csv
    deciding two chunks, brought back as the consensus."""
    work = scratch_copy(tmp_path_factory.mktemp("negotiate") / "work")
    with FakeServer(seed=1) as server:
        server.answer_fn = _quote_the_passage
        config = fake_config(work, server, validation={"gold": ["config/gold/coder_a.csv", "config/gold/coder_b.csv"],
                                                       "replicates": 2, "bootstrap": 20})  # fmt: skip
        targets = ["results/disagreements.parquet", "results/review/review.csv", "results/agreement.parquet"]
        run(work, *targets, "--configfile", str(config), env=KEY)
        yield work, server, config, targets


def _example_sources(work: Path, cb) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """Each source's codes per document (unit: document), with plain pandas: the human files (tidy and wide), the
    model's published codes, its second replicate's shard files, and who rated which documents."""
    a = pd.read_csv(work / "config/gold/coder_a.csv", dtype=str)
    b = pd.read_csv(work / "config/gold/coder_b.csv", dtype=str, keep_default_na=False)
    long = [a[["coder", "doc_id", "field", "value"]].dropna(subset=["field"])]
    for f in [c for c in b.columns if c != "doc_id"]:
        vals = b[["doc_id", f]].assign(value=b[f].str.split(";")).explode("value")
        vals = vals.assign(value=vals.value.str.strip(), field=f, coder="coder_b")
        long.append(vals[vals.value != ""][["coder", "doc_id", "field", "value"]])
    human = pd.concat(long)
    booleans = {f.name for f in cb.fields if f.type == "boolean"}
    human["value"] = [v.lower() if f in booleans else v for f, v in zip(human.field, human.value, strict=True)]
    rated = {"coder_a": set(a.doc_id), "coder_b": set(b.doc_id)}
    codes = pd.read_parquet(work / "results/codes.parquet")
    compared = {f.name for f in cb.fields if f.type != "text"}
    model = codes[codes.field.isin(compared)].assign(coder="model")[["coder", "doc_id", "field", "value"]]
    coded = pd.read_parquet(work / "results/codings.parquet")
    rated["model"] = set(coded.doc_id[coded.status == "coded"])
    second = []
    for path in sorted((work / "results/work/variants").glob("*/*.parquet")):
        res = pd.read_parquet(path)
        for r in res[res.status == "coded"].itertuples():
            rated.setdefault("model#2", set()).add(r.doc_id)
            answer = pd.read_json(pd.io.common.StringIO(r.answer_json), typ="series")
            for f in compared:
                v = answer[f]["value"]
                values = v if isinstance(v, list) else [str(v).lower() if isinstance(v, bool) else v]
                second += [{"coder": "model#2", "doc_id": r.doc_id, "field": f, "value": x} for x in values]
    return pd.concat([human, model, pd.DataFrame(second)], ignore_index=True), rated


@pytest.mark.e2e
def test_example_disagreements_equal_an_independent_computation(example):
    work, _, _, _ = example
    cb = codebook_mod.load(work / "config/codebook.yaml")
    got = pd.read_parquet(work / "results/disagreements.parquet")
    rows, rated = _example_sources(work, cb)
    fields = [f.name for f in cb.fields if f.type != "text"]
    order = {f.name: [v.name for v in f.values] if f.values else ["false", "true"] for f in cb.fields}
    rows = rows.rename(columns={"doc_id": "unit"})
    sets = pd.concat([_value_sets(rows[rows.coder == s], s, rated[s], fields) for s in rated])
    # the majority of two coders: the values both gave; where they differ on a value, no majority for the field
    ha, hb = (sets[sets.source == c].set_index(["unit", "field"]).given for c in ("coder_a", "coder_b"))
    both = ha.index.intersection(hb.index)
    agree = [k for k in both if ha[k] == hb[k]]
    sets = pd.concat([sets, pd.DataFrame({"unit": [k[0] for k in agree], "field": [k[1] for k in agree],
                                          "source": "majority", "given": [ha[k] for k in agree]})])  # fmt: skip
    pairs = [("coder_a", "coder_b"), ("model", "coder_a"), ("model", "coder_b"), ("model", "majority"),
             ("model", "model#2")]  # fmt: skip
    want = _expected(sets, pairs, order)
    assert {"coder_a", "model"} <= set(want.source_a)  # humans and the model disagree somewhere
    _same_rows(got, want)
    # the review order: most sources in conflict on the unit and field first
    assert got.n_sources.is_monotonic_decreasing
    csv = pd.read_csv(work / "results/disagreements.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(csv.unit) == list(got.unit) and len(csv) == len(got)


@pytest.mark.e2e
def test_the_review_page_shows_disagreements_first_side_by_side(example):
    work, _, _, _ = example
    got = pd.read_parquet(work / "results/disagreements.parquet")
    tree = html.parse(str(work / "results/review/index.html"))
    rows = tree.xpath('//section[@id="disagreements"]//tbody/tr')
    groups = got[["unit", "field"]].drop_duplicates()
    assert [(r.xpath("td[1]")[0].text_content(), r.xpath("td[2]")[0].text_content()) for r in rows] == list(
        groups.itertuples(index=False, name=None)
    )
    first = got[(got.unit == groups.unit.iloc[0]) & (got.field == groups.field.iloc[0])]
    side = {li.xpath("b")[0].text_content(): li.text_content().split(": ", 1)[1] for li in rows[0].xpath(".//li")}
    want = dict(zip(first.source_a, first.value_a, strict=True)) | dict(zip(first.source_b, first.value_b, strict=True))
    assert side == {k: v or "—" for k, v in want.items()}
    # the section comes before the first document
    main = tree.xpath("//main")[0]
    assert main.xpath("./section")[0].get("id") == "disagreements"


@pytest.mark.e2e
def test_the_sources_project_carries_each_source_as_its_own_user(example):
    work, server, config, _ = example
    before = len(server.requests)
    run(work, "results/sources.qdpx", "--configfile", str(config), env=KEY)
    assert len(server.requests) == before
    cb = codebook_mod.load(work / "config/codebook.yaml")
    docs = pd.read_parquet(work / "results/documents.parquet")
    texts = dict(zip(docs.doc_id, docs.text, strict=True))
    got, report = qdpx.read_codings(work / "results/sources.qdpx", cb, texts)
    assert report.lines() == []
    files = [work / "config/gold/coder_a.csv", work / "config/gold/coder_b.csv"]
    human, _ = gold.load(files, cb, texts)

    def triples(df):
        return set(zip(df.doc_id, df.field, df.value, strict=True))

    for coder in ("coder_a", "coder_b"):
        mine = human[(human.coder == coder) & human.field.notna()]
        assert triples(got[got.coder == coder]) == triples(mine) and len(mine) > 0
    codes = pd.read_parquet(work / "results/codes.parquet")
    coded = {f.name for f in qdpx.coded_fields(cb)}
    assert triples(got[got.coder == qdpx.user_name("fake-model")]) == triples(codes[codes.field.isin(coded)])
    assert set(got.coder) == {"coder_a", "coder_b", qdpx.user_name("fake-model")}


@pytest.mark.e2e
def test_a_consensus_decided_in_the_review_csv_flows_back_as_a_gold_source(example, tmp_path):
    work, server, config, targets = example
    review = pd.read_csv(work / "results/review/review.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    gold_docs = set(pd.read_csv(work / "config/gold/coder_a.csv").doc_id)
    mine = review[review.doc_id.isin(gold_docs) & (review.field == "emotions")].head(2).copy()
    assert len(mine) == 2
    mine["decision"] = ["correct", "reject"]
    mine["corrected_value"] = ["anger; pride", ""]
    mine["reviewer"] = "dana"
    decided = work / "decided.csv"
    mine.to_csv(decided, index=False)
    cfg = yaml.safe_load(Path(config).read_text())
    cfg["review"] = {"corrections": str(decided)}
    config2 = work / "test-config-review.yaml"
    config2.write_text(yaml.safe_dump(cfg))
    before = len(server.requests)
    was = pd.read_parquet(work / "results/disagreements.parquet")
    run(work, *targets, "results/review/consensus.parquet", "--configfile", str(config2), env=KEY)
    assert len(server.requests) == before  # nothing asked of the model
    consensus = pd.read_parquet(work / "results/review/consensus.parquet")
    coded = consensus[consensus.field.notna()]
    assert set(coded.value) == {"anger", "pride"} and set(coded.decided_by) == {"dana"}
    assert set(consensus.coder) == {"consensus"} and consensus.decided_at.str.match(r"\d{4}-\d\d-\d\dT").all()
    assert set(consensus.doc_id) == set(mine.doc_id)
    agreement = pd.read_parquet(work / "results/agreement.parquet")
    with_consensus = agreement[(agreement.rater_a == "model") & (agreement.rater_b == "consensus")]
    assert len(with_consensus) > 0
    anger = with_consensus[(with_consensus.field == "emotions") & (with_consensus.value == "anger")]
    assert set(anger.metric) >= {"cohen_kappa", "observed_agreement"}
    assert (anger.n_units == len(set(mine.doc_id))).all()  # the documents the reviewer decided, and only those
    # the majority is still the two coders' (consensus is not a voter): the same rows as before the review
    got = pd.read_parquet(work / "results/disagreements.parquet")
    assert set(got.source_a) | set(got.source_b) >= {"consensus"}
    pairs = set(zip(got.source_a, got.source_b, strict=True))
    assert ("model", "consensus") in pairs or ("coder_a", "consensus") in pairs
    assert not any("consensus" in p and "majority" in p for p in pairs)
    _same_rows(got[got.source_b == "majority"], was[was.source_b == "majority"])
