"""PDF and Excel inputs (issue 26 item 4): each is one reader module and one line in the readers' registry.

The files are made in the tests: PDFs written by hand (a few objects and a content stream per page), workbooks
with openpyxl.
"""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from qualcode.config import IngestConfig, TableInput
from qualcode.errors import InputError
from qualcode.inputs import readers
from qualcode.inputs.ingest import ingest, read_document_file

from workflow_helpers import fake_config, run, scratch_copy, tables


def make_pdf(pages: list[list[str] | None]) -> bytes:
    """A PDF with one page per entry: its lines as text, or None for a page with no text (a scanned image's
    place, drawn as a filled rectangle)."""
    objects: list[bytes] = []
    n = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, lines in enumerate(pages):
        if lines is None:
            stream = b"0.5 g 72 72 450 650 re f"
        else:
            shown = " T* ".join("(" + line.replace("(", r"\(").replace(")", r"\)") + ") Tj" for line in lines)
            stream = f"BT /F1 12 Tf 16 TL 72 720 Td {shown} ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def make_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


INTERVIEW = [
    ["INTERVIEWER: How was the first week?", "NURSE: We had no masks on the ward."],
    None,  # a scanned page in the middle: no text
    ["NURSE: I was scared for my kids."],
]


def test_a_pdf_is_read_page_by_page_with_its_page_numbers(tmp_path):
    (tmp_path / "interview.pdf").write_bytes(make_pdf(INTERVIEW))
    docs = read_document_file(tmp_path / "interview.pdf", tmp_path, IngestConfig())
    assert [d.doc_id for d in docs] == ["interview.pdf#p1", "interview.pdf#p3"]
    assert [d.metadata for d in docs] == [{"page": "1"}, {"page": "3"}]
    assert {d.source_file for d in docs} == {"interview.pdf"} and {d.format for d in docs} == {"pdf"}
    first, last = docs
    for line in INTERVIEW[0]:
        assert line in first.text
    assert [t.speaker for t in first.turns] == ["INTERVIEWER", "NURSE"]
    assert last.text == INTERVIEW[2][0] and [t.speaker for t in last.turns] == ["NURSE"]


def test_a_scanned_pdf_is_refused_naming_the_file_never_an_empty_document(tmp_path):
    (tmp_path / "scan.pdf").write_bytes(make_pdf([None, None]))
    with pytest.raises(InputError) as caught:
        read_document_file(tmp_path / "scan.pdf", tmp_path, IngestConfig())
    assert caught.value.source_file == "scan.pdf"
    assert "no text layer on any of its 2 pages" in str(caught.value) and "OCR" in str(caught.value)
    # in a corpus, the scan is a listed failure and the other files are coded
    (tmp_path / "notes.txt").write_text("We had no masks.")
    docs, problems = ingest(sorted(tmp_path.iterdir()), tmp_path, IngestConfig())
    assert [d.doc_id for d in docs] == ["notes.txt"]
    assert [p.source_file for p in problems] == ["scan.pdf"]


def test_a_broken_pdf_says_so(tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a PDF body\n")
    with pytest.raises(InputError, match=r"not a valid \.pdf"):
        read_document_file(tmp_path / "broken.pdf", tmp_path, IngestConfig())


SURVEY = {
    "Notes": [["exported from the survey tool"]],
    "Responses": [
        ["id", "text", "age", "site"],
        [7, "We had no masks on the ward.", 34, "north"],
        [9, "I was scared for my kids.", 41.5, "south"],
        [11, None, 29, "north"],  # an empty answer: no document
    ],
}


def test_an_xlsx_sheet_is_read_with_the_table_settings(tmp_path):
    make_xlsx(tmp_path / "survey.xlsx", SURVEY)
    cfg = IngestConfig(table=TableInput(sheet="Responses", metadata_columns=["age", "site"]))
    docs = read_document_file(tmp_path / "survey.xlsx", tmp_path, cfg)
    rows = SURVEY["Responses"][1:3]
    assert [d.doc_id for d in docs] == [f"survey.xlsx#{row[0]}" for row in rows]
    assert [d.text for d in docs] == [row[1] for row in rows]
    assert [d.metadata for d in docs] == [{"age": str(row[2]), "site": row[3]} for row in rows]
    assert {d.format for d in docs} == {"xlsx"}


def test_an_xlsx_without_the_named_sheet_names_the_sheets_and_the_setting(tmp_path):
    make_xlsx(tmp_path / "survey.xlsx", SURVEY)
    cfg = IngestConfig(table=TableInput(sheet="Answers"))
    with pytest.raises(InputError) as caught:
        read_document_file(tmp_path / "survey.xlsx", tmp_path, cfg)
    assert caught.value.source_file == "survey.xlsx"
    assert "'Answers'" in str(caught.value) and "'Notes', 'Responses'" in str(caught.value)
    assert "ingest.table.sheet" in str(caught.value)


def test_an_xlsx_is_read_from_its_first_sheet_by_default(tmp_path):
    make_xlsx(tmp_path / "survey.xlsx", {"Responses": SURVEY["Responses"], "Notes": SURVEY["Notes"]})
    docs = read_document_file(tmp_path / "survey.xlsx", tmp_path, IngestConfig())
    assert [d.doc_id for d in docs] == ["survey.xlsx#7", "survey.xlsx#9"]


def test_the_registry_reads_pdf_and_xlsx():
    assert {"pdf", "xlsx"} <= set(readers.READERS)


@pytest.mark.e2e
def test_a_pdf_and_an_xlsx_are_coded_end_to_end(tmp_path, fake_server):
    workdir = scratch_copy(tmp_path / "wf", data=False)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "interview.pdf").write_bytes(make_pdf(INTERVIEW))
    make_xlsx(inputs / "survey.xlsx", SURVEY)
    cfg = fake_config(
        workdir,
        fake_server,
        ingest={"input_dir": str(inputs), "table": {"sheet": "Responses", "metadata_columns": ["site"]}},
    )
    run(workdir, "tables", "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": "test-key-for-the-fake-server"})
    t = tables(workdir)
    docs = t["documents"]
    assert sorted(docs.doc_id) == ["interview.pdf#p1", "interview.pdf#p3", "survey.xlsx#7", "survey.xlsx#9"]
    assert set(t["chunks"].doc_id) == set(docs.doc_id)
    assert t["failures"].empty
    coded = t["codings"]
    assert set(coded.doc_id) <= set(docs.doc_id) and len(coded) > 0
    pages = docs.set_index("doc_id")["meta_page"]
    assert pages["interview.pdf#p1"] == "1" and pages["interview.pdf#p3"] == "3"
