"""Reading input files: formats, encodings, normalisation, speaker turns and error handling."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from qualcode.config import IngestConfig, TableInput
from qualcode.errors import InputError
from qualcode.inputs.ingest import Document, IngestProblem, discover, ingest, read_document_file
from qualcode.inputs.text import decode, detect_turns, normalise

TABLE = TableInput()
CFG = IngestConfig()


def write(root: Path, name: str, content: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def read_one(root: Path, name: str, content: str | bytes, table: TableInput = TABLE) -> Document:
    docs = read_document_file(write(root, name, content), root, IngestConfig(table=table))
    assert len(docs) == 1
    return docs[0]


def make_docx(path: Path, paragraphs: list[str], table_rows: list[list[str]] | None = None) -> Path:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    if table_rows:
        table = document.add_table(rows=len(table_rows), cols=len(table_rows[0]))
        for row, values in zip(table.rows, table_rows, strict=True):
            for cell, value in zip(row.cells, values, strict=True):
                cell.text = value
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save(str(path))
    return path


# --- discover ------------------------------------------------------------------------------------------------


def test_discover_matches_globs_sorted_deduplicated_and_skips_hidden(tmp_path):
    for name in ["b.txt", "a/z.txt", "a/notes.md", ".hidden.txt", ".git/x.txt", "a/.cache/y.txt", "image.png"]:
        write(tmp_path, name, "x")
    (tmp_path / "dir.txt").mkdir()  # a directory matching the glob is not a file

    found = discover(tmp_path, ["**/*.txt", "**/*.md", "a/*.txt"])

    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/notes.md", "a/z.txt", "b.txt"]


def test_discover_missing_directory_names_the_setting(tmp_path):
    with pytest.raises(InputError, match="ingest.input_dir"):
        discover(tmp_path / "nope", ["**/*.txt"])


# --- decode ----------------------------------------------------------------------------------------------------


def test_decode_utf8_without_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert decode("café “quoted”".encode(), "a.txt") == ("café “quoted”", "utf-8")
    assert not caplog.records


def test_decode_utf8_bom_is_removed():
    assert decode(b"\xef\xbb\xbfcaf\xc3\xa9", "a.txt") == ("café", "utf-8-sig")


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_decode_utf16_with_bom(codec):
    bom = b"\xff\xfe" if codec.endswith("le") else b"\xfe\xff"
    text, encoding = decode(bom + "Interviewer: café".encode(codec), "a.txt")
    assert (text, encoding) == ("Interviewer: café", "utf-16")


def test_decode_cp1252_warns_naming_the_file(caplog):
    with caplog.at_level(logging.WARNING, logger="qualcode.inputs.ingest"):
        text, encoding = decode(b"caf\xe9 \x93quoted\x94", "survey/export.csv")
    assert (text, encoding) == ("café “quoted”", "cp1252")
    assert any("survey/export.csv" in r.getMessage() and "cp1252" in r.getMessage() for r in caplog.records)


def test_decode_latin1_fallback_warns_naming_the_file(caplog):
    # 0x81 is undefined in cp1252, so only latin-1 can decode it.
    with caplog.at_level(logging.WARNING, logger="qualcode.inputs.ingest"):
        text, encoding = decode(b"caf\xe9 \x81 and the rest of the answer", "odd.txt")
    assert encoding == "latin-1"
    assert text.startswith("café")
    assert any("odd.txt" in r.getMessage() and "latin-1" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",  # NUL bytes
        bytes(range(1, 9)) * 20 + b"some text",  # mostly control characters, no NUL
        b"\xff\xfea\x00" + b"\x00\x00" * 10,  # UTF-16 BOM, then NUL characters
    ],
)
def test_decode_rejects_binary(data):
    with pytest.raises(InputError, match="binary") as info:
        decode(data, "blob.txt")
    assert info.value.source_file == "blob.txt"


# --- normalise -------------------------------------------------------------------------------------------------


def test_normalise_line_ends_trailing_space_and_blank_lines():
    raw = "\ufeff\r\n\r\nfirst line  \r\nsecond\rthird\t\n\n\n\n\nafter gap\n\n\n"
    assert normalise(raw) == "first line\nsecond\nthird\n\nafter gap"


def test_normalise_keeps_single_blank_line_tabs_and_nbsp_and_composes_nfc():
    raw = "a\tb\u00a0c\n\nCafe\u0301"
    assert normalise(raw) == "a\tb\u00a0c\n\nCaf\u00e9"


def test_normalise_is_idempotent():
    raw = "x \r\n\r\n\r\n\r\ny\u0301 \n"
    assert normalise(normalise(raw)) == normalise(raw)


# --- detect_turns ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label",
    ["Interviewer", "I", "R", "Q", "A", "NURSE 2", "Dr. Okafor", "Maria Lopez", "P3", "José Álvarez", "Mary O'Neil"],
)
def test_detect_turns_recognises_speaker_labels(label):
    text = f"Preamble line.\n{label}: Hello there.\nSecond line of the turn.\n\nR: Yes."
    turns = detect_turns(text)
    assert [t.speaker for t in turns] == [label, "R"]
    assert text[turns[0].start : turns[0].end] == f"{label}: Hello there.\nSecond line of the turn."
    assert text[turns[1].start : turns[1].end] == "R: Yes."


@pytest.mark.parametrize(
    "line",
    [
        "Note that: the clinic was closed.",
        "We met at 10:30 in the morning.",
        "10:30: meeting starts",
        "See http://example.org for details.",
        "https://example.org",
        "1: first point",
        "The patient said that the nurse was kind: very kind.",
        "This Is Far Too Long A Label: text",
        "Why not?: text",
    ],
)
def test_detect_turns_ignores_false_positives(line):
    assert detect_turns(line) == ()


def test_detect_turns_offsets_slice_to_the_label_and_exclude_trailing_whitespace():
    text = "Intro text\n\nInterviewer: How was it?\n\n  Maria Lopez: Fine.\nIt was fine.\n\nI: Thanks.   "
    turns = detect_turns(text)
    assert [t.speaker for t in turns] == ["Interviewer", "Maria Lopez", "I"]
    for turn in turns:
        chunk = text[turn.start : turn.end]
        assert chunk.startswith(f"{turn.speaker}:")
        assert chunk == chunk.rstrip()
    assert turns[0].start == text.index("Interviewer")  # the intro belongs to no turn
    assert turns[-1].end == len(text.rstrip())


def test_detect_turns_label_alone_on_its_line():
    text = "INTERVIEWER:\nHow are you?\nRESPONDENT:\nWell."
    assert [(t.speaker, text[t.start : t.end]) for t in detect_turns(text)] == [
        ("INTERVIEWER", "INTERVIEWER:\nHow are you?"),
        ("RESPONDENT", "RESPONDENT:\nWell."),
    ]


# --- plain text ------------------------------------------------------------------------------------------------


def test_txt_document_fields_and_turns(tmp_path):
    doc = read_one(tmp_path, "interviews/nurse_01.txt", "Interviewer: Hi.\r\nNURSE 2: Hello.  \r\n")
    assert doc.doc_id == doc.source_file == "interviews/nurse_01.txt"
    assert (doc.format, doc.encoding) == ("txt", "utf-8")
    assert doc.text == "Interviewer: Hi.\nNURSE 2: Hello."
    assert [t.speaker for t in doc.turns] == ["Interviewer", "NURSE 2"]
    assert doc.metadata == {}


def test_md_and_uppercase_suffix(tmp_path):
    doc = read_one(tmp_path, "Notes.MD", "# Field notes\n\nQ: Why?\nA: Because.")
    assert doc.format == "md"
    assert doc.text.startswith("# Field notes")
    assert [t.speaker for t in doc.turns] == ["Q", "A"]


def test_cp1252_file_is_read_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="qualcode.inputs.ingest"):
        doc = read_one(tmp_path, "old.txt", b"R: caf\xe9 \x93quoted\x94\r\n")
    assert (doc.text, doc.encoding) == ("R: café “quoted”", "cp1252")
    assert any("old.txt" in r.getMessage() for r in caplog.records)


def test_utf16_file(tmp_path):
    doc = read_one(tmp_path, "win.txt", "Interviewer: Grüße\r\n".encode("utf-16"))
    assert (doc.text, doc.encoding) == ("Interviewer: Grüße", "utf-16")


def test_file_names_with_spaces_and_non_ascii(tmp_path):
    doc = read_one(tmp_path, "entretiens/Entretien n°1 – José.txt", "José: Bonjour.")
    assert doc.doc_id == "entretiens/Entretien n°1 – José.txt"
    assert [p.relative_to(tmp_path).as_posix() for p in discover(tmp_path, ["**/*.txt"])] == [doc.source_file]


@pytest.mark.parametrize("content", [b"", b"  \r\n\t\n", "\ufeff\n\n".encode()])
def test_empty_file_is_an_error(tmp_path, content):
    with pytest.raises(InputError, match="empty") as info:
        read_one(tmp_path, "empty.txt", content)
    assert info.value.source_file == "empty.txt"


def test_binary_file_is_an_error(tmp_path):
    with pytest.raises(InputError, match="binary"):
        read_one(tmp_path, "photo.txt", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")


def test_unsupported_suffix_is_an_error(tmp_path):
    with pytest.raises(InputError, match="unsupported file type"):
        read_one(tmp_path, "slides.pptx", b"PK\x03\x04 slides")  # .pdf is read since issue 26


# --- docx ------------------------------------------------------------------------------------------------------


def test_docx_paragraphs_and_table_cells(tmp_path):
    path = make_docx(
        tmp_path / "interviews" / "int 01.docx",
        ["Interviewer: How did it start?", "", "   ", "Dr. Okafor: Slowly."],
        table_rows=[["Age", "42"], ["Site", "Lagos"]],
    )
    [doc] = read_document_file(path, tmp_path, CFG)
    assert doc.doc_id == "interviews/int 01.docx"
    assert (doc.format, doc.encoding) == ("docx", "docx")
    assert doc.text == "Interviewer: How did it start?\n\nDr. Okafor: Slowly.\n\nAge\n\n42\n\nSite\n\nLagos"
    assert [t.speaker for t in doc.turns] == ["Interviewer", "Dr. Okafor"]


def test_docx_that_is_not_a_zip(tmp_path):
    with pytest.raises(InputError, match=r"not a valid \.docx \(not a zip archive\)"):
        read_one(tmp_path, "fake.docx", "I am plain text pretending to be Word.")


def test_docx_zip_without_word_content(tmp_path):
    import zipfile

    path = tmp_path / "broken.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    with pytest.raises(InputError, match=r"not a valid \.docx"):
        read_document_file(path, tmp_path, CFG)


def test_docx_without_text_is_empty(tmp_path):
    path = make_docx(tmp_path / "blank.docx", ["", "  "])
    with pytest.raises(InputError, match="empty"):
        read_document_file(path, tmp_path, CFG)


# --- captions --------------------------------------------------------------------------------------------------

VTT = """WEBVTT

00:00:01.000 --> 00:00:04.000
<v Interviewer>Thanks for joining.</v>

00:00:04.000 --> 00:00:06.000
<v Interviewer>Shall we start?</v>

00:00:06.500 --> 00:00:09.000
<v Dr. Okafor>Yes. I have
worked here ten years.</v>

00:00:09.000 --> 00:00:10.000
[laughter]

00:00:10.000 --> 00:00:12.000
MARIA: And me too.
"""


def test_vtt_voices_become_merged_turns_without_timestamps(tmp_path):
    doc = read_one(tmp_path, "calls/call 1.vtt", VTT)
    assert (doc.doc_id, doc.format, doc.encoding) == ("calls/call 1.vtt", "vtt", "utf-8")
    assert doc.text == (
        "Interviewer: Thanks for joining. Shall we start?\n\n"
        "Dr. Okafor: Yes. I have worked here ten years.\n\n"
        "[laughter]\n\n"
        "MARIA: And me too."
    )
    assert "-->" not in doc.text
    assert [t.speaker for t in doc.turns] == ["Interviewer", "Dr. Okafor", "MARIA"]
    for turn in doc.turns:
        assert doc.text[turn.start : turn.end].startswith(f"{turn.speaker}: ")
    assert doc.text[doc.turns[1].start : doc.turns[1].end] == "Dr. Okafor: Yes. I have worked here ten years."


def test_vtt_in_cp1252_with_crlf(tmp_path):
    data = VTT.replace("Thanks", "Caf\u00e9").replace("\n", "\r\n").encode("cp1252")
    doc = read_one(tmp_path, "legacy.vtt", data)
    assert doc.encoding == "cp1252"
    assert doc.text.startswith("Interviewer: Café for joining.")


@pytest.mark.parametrize(
    "timing",
    ["00:00:0x.000 --> 00:00:02.000", "00:00:01 --> 00:00:02.000", "00:00:01.000 -> 00:00:02.000 -->"],
)
def test_vtt_broken_timestamps(tmp_path, timing):
    data = f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nFine.\n\n{timing}\nLost?\n"
    with pytest.raises(InputError, match="broken timestamps") as info:
        read_one(tmp_path, "bad.vtt", data)
    assert info.value.source_file == "bad.vtt"


def test_vtt_without_header_is_an_error(tmp_path):
    with pytest.raises(InputError, match=r"not a valid \.vtt"):
        read_one(tmp_path, "noheader.vtt", "just some words\n")


SRT = """1
00:00:01,000 --> 00:00:03,000
INTERVIEWER: Where do you work?

2
00:00:03,000 --> 00:00:05,000
INTERVIEWER: I mean, which ward?

3
00:00:05,000 --> 00:00:08,000
NURSE 2: Paediatrics,
mostly nights.

4
00:00:08,000 --> 00:00:09,000
(inaudible)
"""


def test_srt_leading_labels_become_turns(tmp_path):
    doc = read_one(tmp_path, "ward.srt", SRT)
    assert doc.format == "srt"
    assert doc.text == (
        "INTERVIEWER: Where do you work? I mean, which ward?\n\nNURSE 2: Paediatrics, mostly nights.\n\n(inaudible)"
    )
    assert [t.speaker for t in doc.turns] == ["INTERVIEWER", "NURSE 2"]


def test_srt_broken_timestamps(tmp_path):
    with pytest.raises(InputError, match="broken timestamps on line 6"):
        read_one(tmp_path, "bad.srt", SRT.replace("00:00:03,000 --> 00:00:05,000", "00:00:03,000 --> 00:0:xx"))


# --- CSV -------------------------------------------------------------------------------------------------------


def test_csv_rows_become_documents_with_metadata(tmp_path):
    csv = 'id,text,age,site\nr1,"I felt\nworried, mostly.",34,Leeds\nr2,Fine.,,York\n'
    docs = read_document_file(write(tmp_path, "survey.csv", csv), tmp_path, CFG)
    assert [d.doc_id for d in docs] == ["survey.csv#r1", "survey.csv#r2"]
    assert docs[0].text == "I felt\nworried, mostly."  # embedded newline survives
    assert docs[0].metadata == {"age": "34", "site": "Leeds"}
    assert docs[1].metadata == {"age": "", "site": "York"}  # empty cells are "", not NaN
    assert {(d.source_file, d.format, d.encoding) for d in docs} == {("survey.csv", "csv", "utf-8")}


def test_csv_chosen_columns_and_row_numbers(tmp_path):
    table = TableInput(id_column=None, text_column="answer", metadata_columns=["group"])
    csv = "answer,group,secret\nYes,A,x\nNo,B,y\n"
    docs = read_document_file(write(tmp_path, "q.csv", csv), tmp_path, IngestConfig(table=table))
    assert [(d.doc_id, d.text, d.metadata) for d in docs] == [
        ("q.csv#1", "Yes", {"group": "A"}),
        ("q.csv#2", "No", {"group": "B"}),
    ]


def test_csv_cp1252_export(tmp_path, caplog):
    data = b"id,text\r\n1,caf\xe9 \x93quoted\x94\r\n"
    with caplog.at_level(logging.WARNING, logger="qualcode.inputs.ingest"):
        [doc] = read_document_file(write(tmp_path, "export.csv", data), tmp_path, CFG)
    assert (doc.text, doc.encoding) == ("café “quoted”", "cp1252")
    assert any("export.csv" in r.getMessage() for r in caplog.records)


def test_csv_utf8_bom_header_is_found(tmp_path):
    [doc] = read_document_file(write(tmp_path, "excel.csv", b"\xef\xbb\xbfid,text\n1,hello\n"), tmp_path, CFG)
    assert (doc.doc_id, doc.encoding) == ("excel.csv#1", "utf-8-sig")


def test_csv_missing_text_column_lists_columns_and_setting(tmp_path):
    with pytest.raises(InputError) as info:
        read_document_file(write(tmp_path, "s.csv", "id,response\n1,hi\n"), tmp_path, CFG)
    assert "id, response" in info.value.problem
    assert "ingest.table.text_column" in info.value.problem


def test_csv_missing_id_column_names_setting(tmp_path):
    with pytest.raises(InputError, match="ingest.table.id_column"):
        read_document_file(write(tmp_path, "s.csv", "text\nhi\n"), tmp_path, CFG)


def test_csv_missing_metadata_column_names_setting(tmp_path):
    table = TableInput(metadata_columns=["age"])
    with pytest.raises(InputError, match="ingest.table.metadata_columns"):
        read_document_file(write(tmp_path, "s.csv", "id,text\n1,hi\n"), tmp_path, IngestConfig(table=table))


def test_csv_empty_rows_are_skipped_with_a_warning(tmp_path, caplog):
    csv = "id,text\n1,hello\n2,   \n3,\n4,bye\n"
    with caplog.at_level(logging.WARNING, logger="qualcode.inputs.ingest"):
        docs = read_document_file(write(tmp_path, "s.csv", csv), tmp_path, CFG)
    assert [d.doc_id for d in docs] == ["s.csv#1", "s.csv#4"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("s.csv" in m and "row 2" in m for m in messages)
    assert any("s.csv" in m and "row 3" in m for m in messages)


def test_csv_all_rows_empty_is_an_error(tmp_path):
    with pytest.raises(InputError, match="empty"):
        read_document_file(write(tmp_path, "s.csv", "id,text\n1,\n2, \n"), tmp_path, CFG)


def test_csv_header_only_is_an_error(tmp_path):
    with pytest.raises(InputError, match="empty"):
        read_document_file(write(tmp_path, "s.csv", "id,text\n"), tmp_path, CFG)


def test_csv_duplicate_ids_are_listed(tmp_path):
    csv = "id,text\na,x\nb,y\na,z\nc,w\nc,v\n"
    with pytest.raises(InputError, match="duplicate ids") as info:
        read_document_file(write(tmp_path, "s.csv", csv), tmp_path, CFG)
    assert "a, c" in info.value.problem


# --- JSONL -----------------------------------------------------------------------------------------------------


def test_jsonl_rows_become_documents(tmp_path):
    lines = [
        '{"id": "p1", "text": "Interviewer: Hi\\nP1: Hello", "age": 41, "consent": true, "note": null}',
        "",
        '{"id": "p2", "text": "Line\\u2028separator kept", "age": 29}',
    ]
    docs = read_document_file(write(tmp_path, "rows.jsonl", "\n".join(lines) + "\n"), tmp_path, CFG)
    assert [d.doc_id for d in docs] == ["rows.jsonl#p1", "rows.jsonl#p2"]
    assert [t.speaker for t in docs[0].turns] == ["Interviewer", "P1"]
    assert docs[0].metadata == {"age": "41", "consent": "true", "note": ""}
    assert docs[1].metadata == {"age": "29", "consent": "", "note": ""}
    assert docs[1].text == "Line\u2028separator kept"
    assert docs[0].format == "jsonl"


def test_jsonl_bad_line_names_the_line_number(tmp_path):
    data = '{"id": 1, "text": "ok"}\n{"id": 2, "text": "unterminated\n'
    with pytest.raises(InputError, match="line 2") as info:
        read_document_file(write(tmp_path, "rows.jsonl", data), tmp_path, CFG)
    assert info.value.source_file == "rows.jsonl"


def test_jsonl_line_that_is_not_an_object(tmp_path):
    with pytest.raises(InputError, match="line 1 is not a JSON object"):
        read_document_file(write(tmp_path, "rows.jsonl", '["id", "text"]\n'), tmp_path, CFG)


# --- ingest ----------------------------------------------------------------------------------------------------


def corpus(root: Path) -> list[Path]:
    write(root, "b.txt", "R: second")
    write(root, "a.txt", "I: first")
    write(root, "broken.docx", "not a zip")
    write(root, "s.csv", "id,text\n2,two\n1,one\n")
    return discover(root, IngestConfig().include)


def test_ingest_skip_reports_problems_and_keeps_file_and_row_order(tmp_path, caplog):
    paths = corpus(tmp_path)
    with caplog.at_level(logging.ERROR, logger="qualcode.inputs.ingest"):
        docs, problems = ingest(paths, tmp_path, IngestConfig(on_error="skip"))
    assert [d.doc_id for d in docs] == ["a.txt", "b.txt", "s.csv#2", "s.csv#1"]  # s.csv's rows as the file has them
    assert problems == [
        IngestProblem("broken.docx", "not a valid .docx (not a zip archive); re-save it from Word as .docx")
    ]
    assert any("broken.docx" in r.getMessage() for r in caplog.records)


def test_ingest_fail_stops_on_the_first_unreadable_file(tmp_path):
    paths = corpus(tmp_path)
    with pytest.raises(InputError) as info:
        ingest(paths, tmp_path, IngestConfig(on_error="fail"))
    assert info.value.source_file == "broken.docx"


def test_ingest_duplicate_doc_ids_name_both_files(tmp_path):
    path = write(tmp_path, "a.txt", "hello")
    docs, problems = ingest([path, path], tmp_path, IngestConfig())  # the second reading is the one skipped
    assert [d.doc_id for d in docs] == ["a.txt"]
    assert [p.source_file for p in problems] == ["a.txt"] and "also produced by a.txt" in problems[0].problem
    with pytest.raises(InputError, match="a.txt") as info:
        ingest([path, path], tmp_path, IngestConfig(on_error="fail"))
    assert "also produced by a.txt" in info.value.problem


def test_ingest_passes_table_settings(tmp_path):
    path = write(tmp_path, "s.csv", "answer\nyes\n")
    cfg = IngestConfig(table=TableInput(id_column=None, text_column="answer"))
    docs, problems = ingest([path], tmp_path, cfg)
    assert ([d.doc_id for d in docs], problems) == (["s.csv#1"], [])
