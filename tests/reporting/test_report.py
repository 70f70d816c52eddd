"""The report's counts are right on a hand-made run, its figures are byte-for-byte reproducible and keep
their size at any corpus size, and `snakemake --report` embeds every figure, table and the methods
paragraph."""

from __future__ import annotations

import base64
import json
import math
import re

import matplotlib.image
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qualcode.reporting import codes as report_codes
from qualcode.reporting import figures as report_figures
from qualcode.reporting import pages, report
from qualcode.reporting import usage as report_usage

from workflow_helpers import run, scratch_copy, write_config

KEY = "sk-test-FAKE-key-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n"


def _code(doc, chunk, field, value, grounding="exact"):
    return {"doc_id": doc, "chunk_id": chunk, "field": field, "value": value, "grounding": grounding}


@pytest.fixture
def codes():
    """Three chunks of two documents, coded against tests/data/codebook.yaml."""
    rows = [
        _code("a", "c1", "emotions", "fear", "exact"),
        _code("a", "c1", "emotions", "pride", "exact"),  # the same quote, repeated per value
        _code("a", "c1", "solidarity", "present", "normalised"),
        _code("a", "c1", "own_health", "true", "ungrounded"),
        _code("a", "c1", "summary", "A nurse is afraid.", "not_asked"),
        _code("a", "c2", "emotions", "fear", "ungrounded"),
        _code("a", "c2", "solidarity", "absent", "empty"),
        _code("a", "c2", "own_health", "false", "exact"),
        _code("b", "c3", "emotions", "none", "exact"),
        _code("b", "c3", "solidarity", "not_mentioned", "exact"),
        _code("b", "c3", "own_health", "false", "exact"),
    ]
    return pd.DataFrame(rows)


def test_frequencies_count_chunks_and_keep_unused_values(codes, codebook):
    freq = report_codes.frequencies(codes, codebook).set_index(["field", "value"]).chunks
    assert freq["emotions", "fear"] == 2 and freq["emotions", "pride"] == 1 and freq["emotions", "none"] == 1
    assert freq["own_health", "false"] == 2 and freq["own_health", "true"] == 1
    assert "summary" not in freq.index.get_level_values("field")  # free text is not a code
    assert len(freq) == 3 + 3 + 2  # every allowed value, used or not


def test_cooccurrence_and_documents_by_codes(codes, codebook):
    co = report_codes.cooccurrence(codes, codebook)
    assert list(co.index) == list(co.columns) and (co.to_numpy() == co.to_numpy().T).all()
    assert co.loc["emotions:fear", "emotions:fear"] == 2
    assert co.loc["emotions:fear", "emotions:pride"] == 1
    assert co.loc["emotions:none", "emotions:fear"] == 0
    assert "solidarity:present" in co.index and "emotions:pride" in co.index
    docs = report_codes.documents_by_codes(codes, ["a", "b", "empty.txt"], codebook)
    assert list(docs.index) == ["a", "b", "empty.txt"]
    assert docs.loc["a", "emotions:fear"] == 2 and docs.loc["b", "own_health:false"] == 1
    assert docs.loc["empty.txt"].sum() == 0


def test_grounding_counts_one_quote_per_chunk_and_field(codes, codebook):
    g = report_codes.grounding(codes, codebook)
    assert list(g.index) == ["emotions", "solidarity", "own_health"]  # summary asks for no quote
    assert g.loc["emotions"].to_dict() == {"exact": 2, "normalised": 0, "ungrounded": 1, "empty": 0}
    assert g.loc["solidarity", "empty"] == 1
    assert g.to_numpy().sum() == 9  # 3 chunks x 3 quoted fields


def test_llm_usage_leaves_an_unpriced_cost_unknown():
    calls = pd.DataFrame(
        {
            "request_hash": ["h1", "h2", "h3"],
            "status": ["coded", "failed", "coded"],
            "model_asked": ["m", "m", "priced"],
            "model_served": ["m-1", "m-1", None],
            "tokens_in": [100, 50, 10],
            "tokens_out": [20, 10, 5],
            "tokens_cached": [0, 0, 0],
            "batch_id": [None, None, None],
            "latency_s": [1.0, 3.0, 0.5],
            "reasks": [0, 2, 0],
            "retries": [1, 0, 0],
            "cache_hit": [True, False, False],
            "cost": [None, None, 0.25],
        }
    )
    usage = report_usage.llm_usage(calls).set_index("model_asked")
    assert usage.loc["m", "calls"] == 2 and usage.loc["m", "failed"] == 1 and usage.loc["m", "cache_hits"] == 1
    assert usage.loc["m", "tokens_in"] == 150 and usage.loc["m", "latency_median_s"] == 2.0
    assert math.isnan(usage.loc["m", "cost"]) and usage.loc["priced", "cost"] == 0.25
    assert usage.loc["priced", "model_served"] == "n/a"


def _draw_all(codes, codebook, out):
    report_figures.plot_frequencies(report_codes.frequencies(codes, codebook), 3, out / "freq.png")
    report_figures.plot_heatmap(report_codes.cooccurrence(codes, codebook), out / "co.png", "co", "code", "code")
    docs = report_codes.documents_by_codes(codes, ["a", "b"], codebook)
    report_figures.plot_heatmap(docs, out / "docs.png", "docs", "code", "document")
    report_figures.plot_grounding(report_codes.grounding(codes, codebook), out / "grounding.png")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_figures_are_written_and_reproducible(codes, codebook, tmp_path):
    first = _draw_all(codes, codebook, tmp_path / "one")
    second = _draw_all(codes, codebook, tmp_path / "two")
    assert set(first) == {"freq.png", "co.png", "docs.png", "grounding.png"}
    for name, data in first.items():
        assert data.startswith(PNG) and len(data) > 2000, name
        assert data == second[name], f"{name} differs between two identical calls"


def test_no_codes_still_gives_every_figure(codebook, tmp_path):
    empty = pd.DataFrame(columns=["doc_id", "chunk_id", "field", "value", "grounding"], dtype=str)
    drawn = _draw_all(empty, codebook, tmp_path)
    assert len(drawn) == 4 and all(d.startswith(PNG) for d in drawn.values())


def test_pages_escape_what_the_model_wrote(tmp_path):
    report_usage.failures_html(pd.DataFrame(columns=["stage", "reason"]), tmp_path / "none.html")
    assert "No failures" in (tmp_path / "none.html").read_text()
    failures = pd.DataFrame(
        [
            {
                "stage": "coding",
                "source_file": None,
                "doc_id": "a",
                "chunk_id": "c1",
                "reason": "answer does not match the schema",
                "attempts": 3,
                "raw_answer": "<script>alert(1)</script>" + "x" * 1000,
            }
        ]
    )
    report_usage.failures_html(failures, tmp_path / "failures.html")
    page = (tmp_path / "failures.html").read_text()
    assert "does not match the schema" in page and "<script>" not in page and "x" * 400 not in page


def test_markdown_html_renders_the_methods_subset():
    md = (
        "# Methods\n\nTexts were coded with `m` <b>.\nSecond line.\n\n## Parameters\n\n"
        "| Parameter | Value |\n|---|---|\n| Seed | 42 |\n\n```\n{{ codebook.name }} <x>\n```\n"
    )
    out = pages.markdown_html(md)
    assert "<h1>Methods</h1>" in out and "<h2>Parameters</h2>" in out
    assert "<p>Texts were coded with <code>m</code> &lt;b&gt;. Second line.</p>" in out
    assert "<tr><th>Parameter</th><th>Value</th></tr>" in out and "<tr><td>Seed</td><td>42</td></tr>" in out
    assert "---" not in out
    assert "<pre>{{ codebook.name }} &lt;x&gt;</pre>" in out


# -- many documents: bounded figures and pages ------------------------------------------------------

EMOTIONS = ("fear", "pride", "none")
SOLIDARITY = ("present", "absent", "not_mentioned")


def _many(n_docs: int) -> pd.DataFrame:
    """Codes for `n_docs` documents; document i has 1 + i % 4 chunks, each coded with one or two emotions,
    one solidarity value and own_health, with varied grounding."""
    rows = []
    for i in range(n_docs):
        doc = f"doc{i:05d}"
        for j in range(1 + i % 4):
            chunk = f"{doc}-{j}"
            emotions = {EMOTIONS[(i + j) % 3], EMOTIONS[(i * j) % 3]}
            quote = ("exact", "normalised", "ungrounded", "empty")[(i + 2 * j) % 4]
            rows += [_code(doc, chunk, "emotions", e, quote) for e in sorted(emotions)]
            rows.append(_code(doc, chunk, "solidarity", SOLIDARITY[i % 3], "exact"))
            rows.append(_code(doc, chunk, "own_health", "true" if (i + j) % 2 else "false", "exact"))
            rows.append(_code(doc, chunk, "summary", f"passage {i}-{j}", "not_asked"))
    return pd.DataFrame(rows)


def _pixels(path) -> tuple[int, int]:
    return matplotlib.image.imread(path).shape[:2]


def test_documents_by_codes_shows_only_the_documents_with_most_coded_chunks(codebook):
    codes = _many(3000)
    doc_ids = list(dict.fromkeys(codes.doc_id))
    docs = report_codes.documents_by_codes(codes, doc_ids, codebook)
    per_doc = codes.groupby("doc_id", sort=False).chunk_id.nunique()
    # most coded chunks first; ties in the order of doc_ids
    expected = sorted(doc_ids, key=lambda d: (-per_doc[d], doc_ids.index(d)))[: report_codes.TOP_DOCUMENTS]
    assert list(docs.index) == expected
    assert (docs.to_numpy().sum(axis=1) >= per_doc[expected].to_numpy() * 3).all()  # >= 3 codes per chunk
    coded = codes[codes.field != "summary"]
    shown = coded[coded.doc_id.isin(expected)]
    want = pd.crosstab(shown.doc_id, shown.field + ":" + shown.value).reindex(index=expected, columns=docs.columns)
    assert (docs.to_numpy() == want.fillna(0).to_numpy()).all()


def test_counts_at_scale_match_a_crosstab_of_the_chunks(codebook):
    codes = _many(3000)
    coded = codes[codes.field != "summary"]
    m = pd.crosstab(coded.chunk_id, coded.field + ":" + coded.value).clip(upper=1)
    co = report_codes.cooccurrence(codes, codebook)
    want = (m.T @ m).reindex(index=co.index, columns=co.columns)
    assert set(co.index) == set(m.columns) and (co.to_numpy() == want.to_numpy()).all()
    freq = report_codes.frequencies(codes, codebook).set_index(["field", "value"]).chunks
    assert freq["emotions", "fear"] == m["emotions:fear"].sum()
    g = report_codes.grounding(codes, codebook)
    assert g.to_numpy().sum() == codes.chunk_id.nunique() * 3  # one quote per chunk and quoted field


def test_figures_keep_their_size_at_any_corpus_size(codebook, tmp_path):
    """A heatmap of 3,000 documents is as large as one of just over TOP_DOCUMENTS, and says what it leaves out."""
    sizes = {}
    for n in (report_codes.TOP_DOCUMENTS + 1, 3000):
        codes = _many(n)
        doc_ids = list(dict.fromkeys(codes.doc_id))
        docs = report_codes.documents_by_codes(codes, doc_ids, codebook)
        assert docs.shape == (report_codes.TOP_DOCUMENTS, len(report_codes.code_order(codebook)))
        report_figures.plot_documents(docs, len(doc_ids), tmp_path / f"docs{n}.png")
        sizes[n] = _pixels(tmp_path / f"docs{n}.png")
    assert sizes[report_codes.TOP_DOCUMENTS + 1] == sizes[3000]
    height, width = sizes[3000]
    few = report_codes.documents_by_codes(_many(3), ["doc00000", "doc00001", "doc00002"], codebook)
    report_figures.plot_documents(few, 3, tmp_path / "few.png")
    assert _pixels(tmp_path / "few.png")[0] < height  # fewer rows, a smaller figure: the cap is what bounds it


def _failures(n: int) -> pd.DataFrame:
    reasons = (
        "not valid JSON: Expecting value at character {i}",
        "http://127.0.0.1:8000/v1 answered HTTP 500 after {i} attempts",
        "the model refused: passage {i} is about <violence>",
    )
    return pd.DataFrame(
        [
            {
                "stage": "coding",
                "source_file": None,
                "doc_id": f"doc{i:05d}",
                "chunk_id": f"c{i}",
                "reason": reasons[i % 3].format(i=i),
                "attempts": 3,
                "raw_answer": "x" * 2000,
            }
            for i in range(n)
        ]
    )


def test_reason_kind_drops_the_particulars():
    assert report_usage.reason_kind("not valid JSON: Expecting value at character 5") == "not valid JSON"
    assert report_usage.reason_kind("does not match the schema: emotions/value: 'x'") == "does not match the schema"
    url = "https://api.example.org/v1 answered HTTP 429 after 3 attempts"
    assert report_usage.reason_kind(url) == "<url> answered HTTP N after N attempts"
    assert (
        report_usage.reason_kind("line 12 is not valid JSON (Expecting value, column 1)") == "line N is not valid JSON"
    )
    assert report_usage.reason_kind("") == "unknown"


def test_failures_page_lists_a_bounded_number_of_rows_under_counts_by_reason(tmp_path):
    n = 3000
    report_usage.failures_html(_failures(n), tmp_path / "failures.html")
    page = (tmp_path / "failures.html").read_text()
    by_reason, listed = page.split("<h2>Failures, in table order")
    counts = [int(c) for c in re.findall(r"<td>(\d+)</td>\s*</tr>", by_reason)]
    assert sorted(counts) == [n // 3] * 3  # three kinds of reason, whatever the numbers in them
    assert "&lt;url&gt; answered HTTP N after N attempts" in by_reason
    assert listed.count("<tr>") == report_usage.FAILURES_SHOWN
    assert f"the other {n - report_usage.FAILURES_SHOWN:,} are only in" in listed
    assert "doc00199" in listed and "doc00200" not in listed  # the first rows, in table order
    assert "<violence>" not in page


def _tables(codes: pd.DataFrame, directory, row_group_size: int = 1000) -> dict:
    """The four tables report_plots.py reads, as Parquet, in several row groups."""
    chunks = codes.drop_duplicates("chunk_id")
    codings = pd.DataFrame({"doc_id": chunks.doc_id, "chunk_id": chunks.chunk_id, "status": "coded"})
    calls = pd.DataFrame(
        {
            "status": "coded",
            "model_asked": "m",
            "model_served": None,
            "cache_hit": False,
            "reasks": 0,
            "retries": 0,
            "tokens_in": pd.array([100] * len(chunks), dtype="Int64"),
            "tokens_out": pd.array([10] * len(chunks), dtype="Int64"),
            "tokens_cached": pd.array([0] * len(chunks), dtype="Int64"),
            "batch_id": pd.array([None] * len(chunks), dtype="string"),
            "latency_s": 1.0,
            "cost": None,
        }
    )
    paths = {}
    for name, df in {"codes": codes, "codings": codings, "llm_calls": calls, "failures": _failures(500)}.items():
        paths[name] = directory / f"{name}.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), paths[name], row_group_size=row_group_size)
    return paths


def test_write_report_from_parquet_draws_what_the_counting_functions_give(codebook, tmp_path):
    codes = _many(3000)
    figures = ("frequencies", "cooccurrence", "documents", "grounding")
    out = {name: tmp_path / "report" / f"{name}.{'png' if name in figures else 'html'}" for name in report.OUTPUTS}
    n_coded = report.write_report(**_tables(codes, tmp_path), cb=codebook, out=out)
    assert n_coded == codes.chunk_id.nunique()
    doc_ids = list(dict.fromkeys(codes.doc_id))
    report_figures.plot_documents(
        report_codes.documents_by_codes(codes, doc_ids, codebook), len(doc_ids), tmp_path / "d.png"
    )
    assert out["documents"].read_bytes() == (tmp_path / "d.png").read_bytes()  # Parquet in row groups = DataFrame
    assert all(out[name].read_bytes().startswith(PNG) for name in figures)
    usage = out["usage"].read_text()
    assert "no price set" in usage and f"<td>{n_coded}</td>" in usage  # one call per chunk
    assert out["failures"].read_text().count("<tr>") == report_usage.FAILURES_SHOWN + 3  # 200 listed, 3 kinds


# -- through Snakemake -----------------------------------------------------------------------------

REPORTED = (
    "code_frequencies.png",
    "code_cooccurrence.png",
    "documents_by_codes.png",
    "quote_grounding.png",
    "failures.html",
    "model_calls.html",
    "methods.html",
)


def _embedded(html_text: str) -> dict[str, dict]:
    """The report's results, by file name, as Snakemake 9 embeds them (a JSON object in a script tag)."""
    results = json.loads(re.search(r"var results = (\{.*?\});\s*</script>", html_text, re.DOTALL).group(1))
    return {r["name"]: r for r in results.values()}


def _decoded(data_uri: str) -> bytes:
    return base64.b64decode(data_uri.split(";base64,", 1)[1])


@pytest.mark.e2e
def test_snakemake_report_embeds_figures_and_methods(tmp_path, fake_server):
    workdir = scratch_copy(tmp_path / "wf")
    cfg = write_config(
        workdir,
        {
            "llm": {
                "provider": "openai",
                "base_url": fake_server.base_url,
                "model": "fake-model",
                "structured_output": "json_schema",
                "api_key_env": "QUALCODE_TEST_KEY",
            },
            "cache_dir": str(workdir / "cache"),
        },
    )
    env = {"QUALCODE_TEST_KEY": KEY}
    run(workdir, "--configfile", str(cfg), env=env)
    run(workdir, "--configfile", str(cfg), "--report", "report.html", env=env)

    page = (workdir / "report.html").read_text(encoding="utf-8")
    results = _embedded(page)
    assert set(REPORTED) <= set(results)
    for name in REPORTED:
        data = _decoded(results[name]["data_uri"])
        assert data == (workdir / "results/report" / name).read_bytes(), name
        assert results[name]["caption"], f"{name} has no caption"
    assert _decoded(results["code_frequencies.png"]["data_uri"]).startswith(PNG)
    methods = _decoded(results["methods.html"]["data_uri"]).decode()
    assert "Texts were coded with the language model fake-model" in methods
    assert "<table>" in methods
    assert "No failures" in _decoded(results["failures.html"]["data_uri"]).decode()
    # the captions quote the caps the rule passes to the script
    assert re.search(r"the\s+30\s+documents with the most coded chunks", results["documents_by_codes.png"]["caption"])
    assert re.search(r"the first\s+200\s+failures", results["failures.html"]["caption"])
    # the demo-model warning is for the embedded model only
    assert "135M-parameter demo model" not in page
    assert "qualcode coded the texts" in page  # the workflow description
