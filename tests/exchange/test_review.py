"""The review page and review.csv: every quote highlighted at its place, flags where a quote was not found or a
chunk failed, a row per chunk and field to decide on; and the page in a real browser."""

from __future__ import annotations

import pandas as pd
import pytest
from lxml import html as lhtml

from qualcode.exchange import review
from qualcode.outputs import tables

from browser import chromium, console_errors, highlights, needs_chromium, open_file

TEXT = (
    "Interviewer: How was it?\nR: I was terrified of catching it. A colleague covered my shift.\n"
    "We <3 our team & the night bus stopped running.\n"
)
OTHER = "Café staff: we reuse the same mask all week — awful.\n"
# two overlapping chunks of the first document, one chunk of the second, which failed
CHUNKS = pd.DataFrame(
    {
        "chunk_id": ["c1", "c2", "c3"],
        "doc_id": ["a.txt", "a.txt", "b.txt"],
        "chunk_index": [0, 1, 0],
        "start": [0, TEXT.index("A colleague"), 0],
        "end": [TEXT.index("We <3"), len(TEXT), len(OTHER)],
    }
)
DOCUMENTS = pd.DataFrame({"doc_id": ["a.txt", "b.txt"], "text": [TEXT, OTHER]})


def _code(chunk, field, value, quote, grounding="exact"):
    start = TEXT.find(quote) if grounding == "exact" else None
    return {
        "doc_id": "a.txt", "chunk_id": chunk, "chunk_index": int(chunk[1]) - 1, "field": field, "value": value,
        "quote": quote, "quote_start": start, "quote_end": None if start is None else start + len(quote),
        "grounding": grounding, "grounded": grounding == "exact",
    }  # fmt: skip


CODES = pd.DataFrame(
    [
        _code("c1", "emotions", "fear", "I was terrified of catching it"),
        _code("c1", "emotions", "pride", "I was terrified of catching it"),
        _code("c1", "solidarity", "present", "A colleague covered my shift"),  # in the overlap with c2
        _code("c1", "own_health", "false", "not in the text", "ungrounded"),
        _code("c1", "summary", "Afraid.", None, "not_asked"),
        # overlaps the solidarity quote, from the other chunk
        _code("c2", "emotions", "pride", "covered my shift.\nWe <3 our team"),
        _code("c2", "solidarity", "present", "We <3 our team & the night bus"),
        _code("c2", "own_health", "false", "", "empty"),
        _code("c2", "summary", "Team.", None, "not_asked"),
    ]
)
CODINGS = pd.DataFrame(
    [
        {"doc_id": "a.txt", "chunk_id": "c1", "chunk_index": 0, "status": "coded", "emotions": ["fear", "pride"],
         "emotions_quote": "I was terrified of catching it", "solidarity": "present",
         "solidarity_quote": "A colleague covered my shift", "own_health": False, "own_health_quote": "not in the text",
         "summary": "Afraid."},
        {"doc_id": "a.txt", "chunk_id": "c2", "chunk_index": 1, "status": "coded", "emotions": ["pride"],
         "emotions_quote": "covered my shift.\nWe <3 our team", "solidarity": "present",
         "solidarity_quote": "We <3 our team & the night bus", "own_health": False, "own_health_quote": "",
         "summary": "Team."},
        {"doc_id": "b.txt", "chunk_id": "c3", "chunk_index": 0, "status": "failed", "emotions": None,
         "emotions_quote": None, "solidarity": None, "solidarity_quote": None, "own_health": None,
         "own_health_quote": None, "summary": None},
    ]
)  # fmt: skip
FAILURES = pd.DataFrame({"chunk_id": ["c3"], "reason": ["does not match the schema: <emotions> missing"]})


def _page(codebook) -> str:
    return "".join(review.page(codebook, DOCUMENTS, CHUNKS, CODINGS, CODES, FAILURES, "m-1"))


def _highlights(tree) -> dict[str, str]:
    """Each quote's text as the page shows it: its highlighted pieces, in order."""
    out: dict[str, str] = {}
    for mark in tree.iter("mark"):
        for qid in mark.get("data-q").split():
            out[qid] = out.get(qid, "") + mark.text_content()
    return out


def _expected_quotes() -> dict[str, str]:
    grounded = CODES[CODES.grounded]
    return {review.quote_id(0, int(c.quote_start), int(c.quote_end)): c.quote for c in grounded.itertuples()}


def test_every_grounded_quote_is_highlighted_in_place(codebook):
    tree = lhtml.fromstring(_page(codebook))
    assert _highlights(tree) == _expected_quotes()
    # each document's text is shown once, whole, although its chunks overlap
    for i, doc in enumerate(DOCUMENTS.itertuples()):
        shown = "".join(t.text_content() for t in tree.get_element_by_id(f"doc-{i}").find_class("text"))
        assert shown == doc.text


def test_codes_beside_each_chunk_and_flags(codebook):
    tree = lhtml.fromstring(_page(codebook))
    c1 = tree.get_element_by_id("chunk-c1")
    assert c1.get("data-codes").split("|") == ["emotions: fear", "emotions: pride", "solidarity: present",
                                               "own_health: false"]  # fmt: skip
    assert "data-flagged" in c1.attrib and "quote not found: “not in the text”" in c1.text_content()
    assert "data-flagged" not in tree.get_element_by_id("chunk-c2").attrib
    c3 = tree.get_element_by_id("chunk-c3")
    assert "data-flagged" in c3.attrib and "Failed: does not match the schema: <emotions> missing" in c3.text_content()
    options = [o.get("value") for o in tree.get_element_by_id("code-filter").iter("option")][1:]
    assert "themes: grief" not in options and "emotions: fear" in options and "own_health: true" in options


def test_the_page_is_self_contained_and_the_same_each_time(codebook):
    text = _page(codebook)
    assert text == _page(codebook)
    tree = lhtml.fromstring(text)
    assert not tree.xpath("//link | //img | //script[@src] | //iframe")


def test_review_csv_has_a_row_per_chunk_and_field(codebook):
    rows = review.review_rows(codebook, CHUNKS, CODINGS, CODES)
    assert len(rows) == len(CHUNKS) * len(codebook.fields)
    assert list(rows.columns[-4:]) == ["decision", "corrected_value", "reviewer", "note"]
    assert (rows[["decision", "corrected_value", "reviewer", "note"]] == "").all().all()
    one = rows.set_index(["chunk_id", "field"])
    assert one.loc[("c1", "emotions"), "model_value"] == "fear; pride"
    assert one.loc[("c1", "own_health"), ["model_value", "grounding"]].tolist() == ["false", "ungrounded"]
    assert one.loc[("c1", "summary"), ["model_value", "grounding"]].tolist() == ["Afraid.", "not_asked"]
    assert (one.loc["c3", "status"] == "failed").all() and (one.loc["c3", "model_value"] == "").all()


@needs_chromium
def test_the_page_in_a_real_browser(codebook, tmp_path):
    from selenium.webdriver.support.ui import Select

    path = tmp_path / "index.html"
    path.write_text(_page(codebook), encoding="utf-8")
    with chromium() as driver:
        open_file(driver, path)
        assert highlights(driver) == _expected_quotes()
        Select(driver.find_element("id", "code-filter")).select_by_value("solidarity: present")
        visible = [c.get_attribute("id") for c in driver.find_elements("css selector", ".chunk") if c.is_displayed()]
        assert visible == ["chunk-c1", "chunk-c2"]
        dimmed = {m.text for m in driver.find_elements("css selector", "mark.dim")}
        assert "I was terrified of catching it" in dimmed and "A colleague" not in "".join(dimmed)
        driver.find_element("id", "flagged-only").click()
        visible = [c.get_attribute("id") for c in driver.find_elements("css selector", ".chunk") if c.is_displayed()]
        assert visible == ["chunk-c1"]
        assert console_errors(driver) == []
        assert driver.save_screenshot(str(tmp_path / "review.png"))


@pytest.mark.parametrize("bad", ["<script>alert(1)</script>", "a\"b'c&d"])
def test_text_is_escaped(codebook, bad):
    docs = DOCUMENTS.assign(doc_id=[bad, "b.txt"])
    chunks = CHUNKS.assign(doc_id=[bad, bad, "b.txt"])
    codes = CODES.assign(doc_id=bad)
    tree = lhtml.fromstring("".join(review.page(codebook, docs, chunks, CODINGS, codes, FAILURES, "m-1")))
    assert not [s for s in tree.iter("script") if "alert" in (s.text or "")]
    assert tree.xpath("//h2")[0].text_content() == bad


def test_a_run_where_every_chunk_failed(codebook, tmp_path):
    """Nothing coded: the page flags every chunk and the project holds the texts and the codebook, no codings."""
    from qualcode.exchange import qdpx

    failed = CODINGS.assign(status="failed")
    for col in failed.columns[4:]:
        failed[col] = None
    no_codes = CODES.iloc[0:0]
    tree = lhtml.fromstring("".join(review.page(codebook, DOCUMENTS, CHUNKS, failed, no_codes, FAILURES, "m-1")))
    assert len(tree.find_class("failed")) == len(CHUNKS) and not list(tree.iter("mark"))
    docs = DOCUMENTS.assign(source_file="a", format="txt")
    project = tmp_path / "empty.qdpx"
    project.write_bytes(qdpx.project_qdpx(codebook, docs, CHUNKS, no_codes, "m-1", "qualcode test"))
    gold, report = qdpx.read_codings(project, codebook, dict(zip(docs.doc_id, docs.text, strict=True)))
    assert gold.empty and report.lines() == []


def test_review_csv_written_in_batches_reads_back_as_one_table(codebook, tmp_path):
    """review.csv is written a batch of chunks at a time (bounded memory at any corpus size): one header, every
    row once, in the chunks' order."""
    path = tmp_path / "review.csv"
    with tables.open_csv(path) as fh:
        for i, rows in enumerate(review.review_row_batches(codebook, CHUNKS, CODINGS, CODES, batch=1)):
            tables.write_csv(rows, fh, header=i == 0)
    back = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, dtype=str)
    assert len(back) == len(CHUNKS) * len(codebook.fields)
    assert back.chunk_id.tolist() == [c for c in CHUNKS.chunk_id for _ in codebook.fields]
    assert back.field.tolist() == [f.name for _ in CHUNKS.chunk_id for f in codebook.fields]
