"""What researchers open in spreadsheets, QDA programs and the browser (issue 18, items 5, 6, 10 and 11): CSV cells
that a spreadsheet would run as formulas are neutralised (and the escaping undone when review.csv comes back), any
metadata header works in every output, the model's own codings in a reviewed project are not a human's, and the
review page lists documents in row order, compactly, and shows quotes in the overlap under the code filter.

The outputs are built once, by the library's writers, from a tiny survey table read by the real table reader."""

from __future__ import annotations

import csv
import json
import re
import tempfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from lxml import html as lhtml

from qualcode.config import ChunkingConfig, IngestConfig
from qualcode.exchange import corrections, qdpx, review
from qualcode.inputs import chunking, ingest
from qualcode.outputs import results, tables
from qualcode.records import ChunkResult
from qualcode.validity import gold

from browser import chromium, console_errors, needs_chromium, open_file

# -- the corpus: a survey export with hostile cells and headers of every kind ----------------------------------------

# Headers as survey programs and spreadsheets write them: spaces, punctuation, digits first, non-ASCII letters, CJK,
# emoji, quotes, markup characters, Python keywords and pandas' own names, a formula, a tab.
HEADERS = [
    "age group", "Q3 (open)", "v1.2", "pre-post", "3rd wave", "Größe", "年龄组", "😀 mood", 'say "hi"', "it's",
    "<a&b>", "class", "lambda", "_private", "__dunder__", "Index", "=cmd", "tab\there",
]  # fmt: skip
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
N_ROWS = 12  # row ids 1..12: as text, #10 sorts before #2
FORMULA = '=HYPERLINK("http://x.example/","click")'


def _cell(row: int, column: int) -> str:
    """Metadata values, some of them formulas, a phone number and plain numbers (which stay numbers)."""
    values = ["=1+2", "+44 20 7946 0958", "-3", "@SUM(A1)", "ok", "'=quoted", "2.5", "\tlead"]
    return values[(row + column) % len(values)]


def _text(row: int) -> str:
    openers = [FORMULA, "@admin we were alone", "-- no masks at all", "+1 for the night shift", "We coped"]
    return f"{openers[row % len(openers)]}. I was terrified on shift {row}. A colleague covered for me."


def _answer(row: int, text: str) -> dict:
    # the model's text answer and quotes begin with formula characters too
    quote = text.split(".")[0]
    return {
        "emotions": {"value": ["fear"], "quote": f"I was terrified on shift {row}"},
        "solidarity": {"value": "present", "quote": quote},
        "own_health": {"value": False, "quote": ""},
        "summary": {"value": FORMULA if row % 2 else f"-{row} nurses afraid"},
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """documents, chunks and the published tables with their CSVs, and the review page with review.csv."""
    from qualcode.inputs import codebook as codebook_mod

    cb = codebook_mod.load(Path(__file__).parent.parent / "data" / "codebook.yaml")
    root = tmp_path_factory.mktemp("exports")
    raw = root / "raw"
    raw.mkdir()
    rows = [["id", "text", *HEADERS]] + [
        [str(i), _text(i), *(_cell(i, j) for j in range(len(HEADERS)))] for i in range(1, N_ROWS + 1)
    ]
    with open(raw / "survey.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    docs, problems = ingest.ingest([raw / "survey.csv"], raw, IngestConfig(input_dir=str(raw)))
    assert not problems
    chunks = chunking.chunk_documents(docs, ChunkingConfig())
    res = [
        ChunkResult(
            chunk_id=c.chunk_id,
            doc_id=c.doc_id,
            status="coded",
            raw="{}",
            error=None,
            answer_json=json.dumps(_answer(int(c.doc_id.split("#")[1]), c.text)),
            request_hash=f"{i:064x}",
            provider="openai",
            base_url="http://x/v1",
            model_asked="m-1",
            attempts=1,
            cache_hit=False,
        )
        for i, c in enumerate(chunks)
    ]
    tables.write(tables.documents_table(docs), root / "documents.parquet")
    tables.write(tables.chunks_table(chunks), root / "chunks.parquet")
    tables.write(tables.problems_table([]), root / "problems.parquet")
    tables.write(tables.results_table(res), root / "shard.parquet")
    out = {name: root / "results" / f"{name}.parquet" for name in tables.PUBLISHED}
    results.write_tables(
        codebook=cb, documents=root / "documents.parquet", chunks=root / "chunks.parquet",
        shard_files=[root / "shard.parquet"], ingest_failures=root / "problems.parquet", out=out,
        codings_csv=root / "results" / "codings.csv", excerpts_csv=root / "results" / "excerpts.csv",
    )  # fmt: skip
    review.write_review(
        codebook=cb, documents=out["documents"], chunks=out["chunks"], codings=out["codings"], codes=out["codes"],
        failures=out["failures"], model="m-1", page_out=root / "results" / "review" / "index.html",
        csv_out=root / "results" / "review" / "review.csv",
    )  # fmt: skip
    return {"cb": cb, "docs": docs, "root": root, "out": out, "results": root / "results"}


def _cells(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.reader(fh))


def _starts_a_formula(cell: str) -> bool:
    """What a spreadsheet would run: a cell starting with a formula character that is not a plain number."""
    return cell.startswith(TRIGGERS) and not re.fullmatch(r"[+-]?\d+(\.\d+)?", cell)


# -- item 5: spreadsheet formula injection -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["codings.csv", "excerpts.csv", "review/review.csv"])
def test_no_csv_cell_starts_a_formula_and_each_is_the_tables_text_escaped(built, name):
    """Every text cell of a CSV for spreadsheets is the table's text with a ' before it exactly where the text
    would start a formula; numbers (`-3`, `2.5`) stay numbers."""
    grid = _cells(built["results"] / name)
    header, body = grid[0], grid[1:]
    assert not [c for row in grid for c in row if _starts_a_formula(c)]
    source = {
        "codings.csv": lambda: results.codings_for_spreadsheets(
            tables.read(built["out"]["codings"], "codings"), built["cb"]),
        "excerpts.csv": lambda: results.excerpts_for_spreadsheets(tables.read(built["out"]["excerpts"], "excerpts")),
        "review/review.csv": lambda: review.review_rows(
            built["cb"], *(tables.read(built["out"][n], n).to_pandas() for n in ("chunks", "codings", "codes"))),
    }[name]()  # fmt: skip
    texts = [c for c in source.columns if source[c].map(lambda v: isinstance(v, str)).any()]
    escaped = 0
    for column in texts:
        want = [tables.spreadsheet_text(v) if isinstance(v, str) else "" for v in source[column]]
        got = [row[header.index(column)] for row in body]
        assert got == want, column
        escaped += sum(w != v for w, v in zip(want, source[column], strict=True) if isinstance(v, str))
    assert escaped > 0  # the corpus does hold cells to neutralise in each file


def test_numbers_and_metadata_numbers_are_left_as_numbers(built):
    excerpts = pd.read_csv(built["results"] / "excerpts.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    values = set(excerpts["meta_age group"])
    assert {"-3", "2.5", "'=1+2", "'+44 20 7946 0958", "'@SUM(A1)", "''=quoted", "'\tlead"} <= values
    codings = _cells(built["results"] / "codings.csv")
    # a numeric column (chunk_index, the 0/1 columns) is written as numbers
    at = codings[0].index("chunk_index")
    assert all(row[at].isdigit() for row in codings[1:])


def test_parquet_keeps_the_exact_text(built):
    excerpts = tables.read(built["out"]["excerpts"], "excerpts").to_pandas()
    meta = {d.doc_id: d.metadata for d in built["docs"]}
    for h in HEADERS:
        assert excerpts[f"meta_{h}"].tolist() == [meta[d][h] for d in excerpts.doc_id]
    codes = tables.read(built["out"]["codes"], "codes").to_pandas()
    assert FORMULA in set(codes.value) and set(codes.quote.dropna()) & {FORMULA, "@admin we were alone"}


def test_a_filled_review_csv_reads_back_unescaped(built, tmp_path):
    """The reviewer fills in the review.csv qualcode wrote, copying the model's escaped answer into
    corrected_value as the spreadsheet shows it: the decision holds the answer's text, without the '."""
    path = built["results"] / "review" / "review.csv"
    rows = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    summary = rows.index[rows.field == "summary"]
    hostile = [i for i in summary if rows.at[i, "model_value"].startswith("'=")]
    assert hostile
    for i in hostile:
        rows.loc[i, ["decision", "corrected_value", "reviewer"]] = ["correct", rows.at[i, "model_value"], "'@ana"]
    filled = tmp_path / "filled.csv"
    rows.to_csv(filled, index=False, encoding="utf-8-sig")  # as a spreadsheet saves it: the cells as shown
    chunks = tables.read(built["out"]["chunks"], "chunks").to_pandas()
    decisions = corrections.read_review_csv(filled, built["cb"], chunks, "reviewer")
    assert [decisions[(rows.at[i, "chunk_id"], "summary")] for i in hostile] == [("correct", [FORMULA], "@ana")] * len(
        hostile
    )


# the characters CSV and XML can carry (no lone surrogates, no NUL), with the formula characters weighted in
_TEXT = st.text(
    st.sampled_from("=+-@\t\r\n'\" ;,3.eE") | st.characters(exclude_categories=("Cs",), exclude_characters="\0"),
    max_size=12,
)


@given(_TEXT)
@settings(max_examples=500, deadline=None)
def test_the_escaping_is_undone_exactly(text):
    escaped = tables.spreadsheet_text(text)
    assert tables.from_spreadsheet_text(escaped) == text
    assert not _starts_a_formula(escaped)


@given(st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=4))
@example([("=1+2", "\r0"), ("'=x", "''@y")])  # a lone CR in a cell once split its row
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_review_csv_round_trip(codebook, pairs):
    """Whatever a reviewer writes (text that starts with a formula character, or with ' and one), written as
    qualcode writes CSVs and read back as a filled review.csv, gives the same text (trimmed, as decisions are)."""
    chunks = pd.DataFrame({"chunk_id": [f"c{i}" for i in range(len(pairs))]})
    rows = pd.DataFrame({
        "chunk_id": chunks.chunk_id, "field": "summary", "decision": "correct",
        "corrected_value": [value for value, _ in pairs], "reviewer": [who for _, who in pairs],
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "review.csv"
        with tables.open_csv(path) as fh:
            tables.write_csv(rows, fh)
        decisions = corrections.read_review_csv(path, codebook, chunks, "default")
    for i, (value, who) in enumerate(pairs):
        assert decisions[(f"c{i}", "summary")] == ("correct", [value.strip()], who.strip() or "default")


# -- item 6: any metadata header, in every output --------------------------------------------------------------------


def test_every_header_reaches_the_documents_and_excerpts(built):
    back = tables.read_documents(built["out"]["documents"])
    assert [d.metadata for d in back] == [d.metadata for d in built["docs"]]
    assert list(built["docs"][0].metadata) == HEADERS
    header = _cells(built["results"] / "excerpts.csv")[0]
    assert [h for h in header if h.startswith("meta_")] == [f"meta_{h}" for h in HEADERS]


def test_every_header_is_a_variable_of_the_refi_qda_project(built, tmp_path):
    out = built["out"]
    counts = qdpx.write_exports(
        codebook=built["cb"], documents=out["documents"], chunks=out["chunks"], codes=out["codes"], model="m-1",
        version="test", qdpx_out=tmp_path / "project.qdpx", qdc_out=tmp_path / "codebook.qdc",
    )  # fmt: skip
    assert counts["sources"] == N_ROWS
    with zipfile.ZipFile(tmp_path / "project.qdpx") as zf:
        root = etree.fromstring(zf.read("project.qde"))
    qdpx._schema(qdpx.PROJECT_XSD).assertValid(root)
    ns = {"q": qdpx.PROJECT_NS}
    names = {v.get("guid"): v.get("name") for v in root.iterfind("q:Variables/q:Variable", ns)}
    assert sorted(names.values()) == sorted(HEADERS)
    meta = {d.doc_id: d.metadata for d in built["docs"]}
    for src in root.iterfind("q:Sources/q:TextSource", ns):
        values = {names[v.find("q:VariableRef", ns).get("targetGUID")]: v.findtext("q:TextValue", namespaces=ns)
                  for v in src.iterfind("q:VariableValue", ns)}  # fmt: skip
        assert values == meta[src.get("name")]


# -- item 10: a project edited in a QDA program, read back as human codings ------------------------------------------

ANA = "AAAAAAAA-0000-0000-0000-00000000000A"


def _edited_project(built, tmp_path) -> tuple[Path, dict[str, str]]:
    """qualcode's own export, in which Ana (a human) coded the first quote of each of the first three documents
    as solidarity: absent, where the model said present, and agreed with the model's fear there."""
    project = tmp_path / "project.qdpx"
    out = built["out"]
    qdpx.write_exports(codebook=built["cb"], documents=out["documents"], chunks=out["chunks"], codes=out["codes"],
                       model="m-1", version="test", qdpx_out=project, qdc_out=tmp_path / "c.qdc")  # fmt: skip
    ns = {"q": qdpx.PROJECT_NS}
    edited = tmp_path / "edited.qdpx"
    recoded = {}
    with zipfile.ZipFile(project) as src, zipfile.ZipFile(edited, "w") as dst:
        root = etree.fromstring(src.read("project.qde"))
        etree.SubElement(root.find("q:Users", ns), f"{{{qdpx.PROJECT_NS}}}User", guid=ANA, name="Ana")
        for k, source in enumerate(root.iterfind("q:Sources/q:TextSource", ns)):
            if k == 3:
                break
            sel = source.find("q:PlainTextSelection", ns)
            recoded[source.get("name")] = sel.get("startPosition")
            for n, code in enumerate([("solidarity", "absent"), ("emotions", "fear")]):
                coding = etree.Element(f"{{{qdpx.PROJECT_NS}}}Coding", guid=f"AAAAAAAA-0000-0000-{k:04d}-{n:012d}",
                                       creatingUser=ANA)  # fmt: skip
                etree.SubElement(coding, f"{{{qdpx.PROJECT_NS}}}CodeRef", targetGUID=qdpx.code_guid(*code))
                sel.find("q:Coding", ns).addprevious(coding)
        dst.writestr("project.qde", etree.tostring(root))
        for item in src.namelist():
            if item != "project.qde":
                dst.writestr(item, src.read(item))
    return edited, recoded


def test_the_models_own_codings_are_not_human_codings(built, tmp_path):
    edited, recoded = _edited_project(built, tmp_path)
    texts = {d.doc_id: d.text for d in built["docs"]}
    rows, problems = gold.load([edited], built["cb"], texts)
    assert set(rows.coder) == {"Ana"}
    assert sorted(set(rows.doc_id)) == sorted(recoded)
    assert sorted(zip(rows.field, rows.value, strict=True)) == sorted(
        [("solidarity", "absent"), ("emotions", "fear")] * 3
    )
    everything, _ = qdpx.read_codings(edited, built["cb"], texts)
    n_model = int((everything.coder == "qualcode: m-1").sum())
    assert n_model > 0
    assert problems == [f"{edited}: {n_model} codings by 'qualcode: m-1' left out: that user is the model "
                        "(qualcode's export), not a human coder"]  # fmt: skip


def test_the_log_says_which_codes_of_the_models_a_reviewers_code_replaced(built, tmp_path):
    edited, recoded = _edited_project(built, tmp_path)
    out = built["out"]
    counts, notes = corrections.write_reviewed(
        corrections=edited, codebook=built["cb"], documents=out["documents"], chunks=out["chunks"],
        codes=out["codes"], model="m-1", reviewer="reviewer", ungrounded="chunk", out=tmp_path / "reviewed.parquet",
    )  # fmt: skip
    reviewed = pd.read_parquet(tmp_path / "reviewed.parquet")
    replaced = reviewed[(reviewed.field == "solidarity") & (reviewed.decided_by == "Ana")]
    chunks = tables.read(out["chunks"], "chunks").to_pandas().set_index("chunk_id")
    expected = [
        f"{edited}: {doc_id}, chunk {chunks.at[chunk_id, 'chunk_index']} ({chunk_id}), field solidarity: Ana's "
        "'absent' replaced the model's 'present'"
        for doc_id, chunk_id in zip(replaced.doc_id, replaced.chunk_id, strict=True)
    ]
    assert len(expected) >= 3 and notes == expected  # fear: the model's own value, kept, so not replaced


# -- item 11: the review page ----------------------------------------------------------------------------------------


def test_documents_are_in_row_order(built):
    tree = lhtml.parse(str(built["results"] / "review" / "index.html")).getroot()
    shown = [h.text_content() for h in tree.iter("h2")]
    assert shown == [f"survey.csv#{i}" for i in range(1, N_ROWS + 1)]
    assert [a.text_content() for a in tree.xpath("//nav/a")] == shown


def _many_documents(n: int):
    """`n` documents of two overlapping chunks each; in each, the second chunk's quote lies in the overlap and
    its code (emotions: pride) is not the first chunk's."""
    text = "Intro words here. We were proud of the team. Then the shift ended and we went home.\n"
    overlap = text.index("We were proud")
    docs = pd.DataFrame({"doc_id": [f"interviews/site-{i:03d}/participant-{i:03d}.txt" for i in range(n)],
                         "text": text})  # fmt: skip
    chunks, codes, codings = [], [], []
    for i, doc_id in enumerate(docs.doc_id):
        for k, (start, end) in enumerate([(0, text.index("Then")), (overlap, len(text))]):
            chunks.append({"chunk_id": f"c{i}-{k}", "doc_id": doc_id, "chunk_index": k, "start": start, "end": end})
            value, quote = ("fear", "Intro words here") if k == 0 else ("pride", "We were proud of the team")
            at = text.index(quote)
            codes.append({"doc_id": doc_id, "chunk_id": f"c{i}-{k}", "chunk_index": k, "field": "emotions",
                          "value": value, "quote": quote, "quote_start": at, "quote_end": at + len(quote),
                          "grounding": "exact", "grounded": True})  # fmt: skip
            codings.append({"doc_id": doc_id, "chunk_id": f"c{i}-{k}", "chunk_index": k, "status": "coded",
                            "emotions": [value], "emotions_quote": quote})  # fmt: skip
    failures = pd.DataFrame({"chunk_id": pd.Series([], dtype=object), "reason": pd.Series([], dtype=object)})
    return docs, pd.DataFrame(chunks), pd.DataFrame(codings), pd.DataFrame(codes), failures


@needs_chromium
def test_the_first_screen_shows_text_and_the_filter_shows_quotes_in_the_overlap(codebook, tmp_path):
    from selenium.webdriver.support.ui import Select

    n = 300
    path = tmp_path / "index.html"
    path.write_text("".join(review.page(codebook, *_many_documents(n), "m-1")), encoding="utf-8")
    with chromium(width=1280, height=800) as driver:
        open_file(driver, path)
        height = driver.execute_script("return window.innerHeight")
        first = driver.find_element("css selector", "#doc-0 .chunk .text")
        assert driver.execute_script("return arguments[0].getBoundingClientRect().top", first) < height
        # every document is still listed, a click away
        assert len(driver.find_elements("css selector", "nav a")) == n
        driver.find_element("css selector", "details.docs summary").click()
        top = driver.execute_script("return document.querySelector('#doc-0').getBoundingClientRect().top")
        assert top < height
        # the second chunk's quote is shown in the overlap, in the first chunk's text: filtering by its code
        # shows it, highlighted, in every document
        Select(driver.find_element("id", "code-filter")).select_by_value("emotions: pride")
        marks = [m for m in driver.find_elements("css selector", "mark") if "pride" in m.get_attribute("data-codes")]
        assert len(marks) == n and all(m.is_displayed() for m in marks)
        assert not [m for m in marks if "dim" in m.get_attribute("class")]
        shown = driver.find_element("id", "shown").text
        assert shown == f"{2 * n} of {2 * n} chunks shown"
        Select(driver.find_element("id", "code-filter")).select_by_value("emotions: fear")
        assert driver.find_element("id", "shown").text == f"{n} of {2 * n} chunks shown"
        assert console_errors(driver) == []
