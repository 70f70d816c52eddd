"""REFI-QDA export and import: schema-valid projects, offsets that point at the quotes, identical bytes for identical
inputs, a round trip that keeps every code, and clear messages for files that cannot be used."""

from __future__ import annotations

import io
import uuid
import zipfile

import pandas as pd
import pytest
from lxml import etree

from qualcode.exchange import qdpx
from qualcode.validity import gold

TEXT_A = "Interviewer: How was it?\nR: I was terrified of catching it. A colleague covered my shift.\n"
TEXT_B = "Café staff: we reuse the same mask all week — it's 🙁 awful.\n"
NS = {"q": qdpx.PROJECT_NS}


def _documents() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "doc_id": ["a.txt", "survey.csv#2"],
            "source_file": ["a.txt", "survey.csv"],
            "format": ["txt", "csv"],
            "text": [TEXT_A, TEXT_B],
            "meta_site": [None, "north"],
        }
    )


def _chunks() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "chunk_id": ["c1", "c2"],
            "doc_id": ["a.txt", "survey.csv#2"],
            "chunk_index": [0, 0],
            "start": [0, 0],
            "end": [len(TEXT_A), len(TEXT_B)],
        }
    )


def _code(doc, chunk, field, value, quote, grounding="exact"):
    text = {"a.txt": TEXT_A, "survey.csv#2": TEXT_B}[doc]
    start = text.find(quote) if grounding == "exact" else None
    return {
        "doc_id": doc, "chunk_id": chunk, "chunk_index": 0, "field": field, "value": value, "quote": quote,
        "quote_start": start, "quote_end": start + len(quote) if start is not None else None,
        "grounding": grounding, "grounded": grounding == "exact",
    }  # fmt: skip


def _codes() -> pd.DataFrame:
    return pd.DataFrame(
        [
            _code("a.txt", "c1", "emotions", "fear", "I was terrified of catching it"),
            _code("a.txt", "c1", "solidarity", "present", "A colleague covered my shift"),
            _code("a.txt", "c1", "own_health", "false", "no such words here", "ungrounded"),
            _code("a.txt", "c1", "summary", "A nurse afraid.", None, "not_asked"),
            # the emoji is outside the Basic Multilingual Plane: one code point, two UTF-16 units
            _code("survey.csv#2", "c2", "emotions", "fear", "it's 🙁 awful"),
            _code("survey.csv#2", "c2", "emotions", "pride", "it's 🙁 awful"),
        ]
    )


def _export(codebook, tmp_path, ungrounded="chunk", codes=None, name="p.qdpx"):
    data = qdpx.project_qdpx(codebook, _documents(), _chunks(), _codes() if codes is None else codes, "m-1",
                             "qualcode test", ungrounded)  # fmt: skip
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _qde(path) -> etree._Element:
    with zipfile.ZipFile(path) as zf:
        return etree.fromstring(zf.read("project.qde"))


def _rewrite(path, tmp_path, edit, name="edited.qdpx"):
    """The same project with its XML changed by `edit` (a function of the text)."""
    out = tmp_path / name
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            dst.writestr(item, edit(data.decode()).encode() if item == "project.qde" else data)
    return out


def _texts() -> dict[str, str]:
    return dict(zip(_documents().doc_id, _documents().text, strict=True))


def test_export_validates_against_the_refi_qda_schemas(codebook, tmp_path):
    path = _export(codebook, tmp_path)
    schema = etree.XMLSchema(etree.parse(str(qdpx.SCHEMA_DIR / "Project-mrt2019.xsd")))
    schema.assertValid(_qde(path))
    qdc = etree.fromstring(qdpx.codebook_qdc(codebook, "qualcode test"))
    etree.XMLSchema(etree.parse(str(qdpx.SCHEMA_DIR / "Codebook.xsd"))).assertValid(qdc)


def test_codes_are_the_codebook_fields_and_values(codebook, tmp_path):
    root = _qde(_export(codebook, tmp_path))
    folders = root.findall("q:CodeBook/q:Codes/q:Code", NS)
    coded = [f for f in codebook.fields if f.type != "text"]
    assert [f.get("name") for f in folders] == [f.name for f in coded]
    assert all(f.get("isCodable") == "false" for f in folders)
    for folder, f in zip(folders, coded, strict=True):
        values = [v.name for v in f.values] or ["true", "false"]
        assert [c.get("name") for c in folder.findall("q:Code", NS)] == [f"{f.name}: {v}" for v in values]
    definitions = {
        c.get("name"): c.findtext("q:Description", namespaces=NS) for c in root.iter(f"{{{qdpx.PROJECT_NS}}}Code")
    }
    assert definitions["emotions: fear"] == codebook.fields[0].values[0].definition
    assert [u.get("name") for u in root.findall("q:Users/q:User", NS)] == ["qualcode: m-1"]


def test_each_grounded_quote_is_a_selection_at_its_code_point_offsets(codebook, tmp_path):
    path = _export(codebook, tmp_path, ungrounded="skip")
    root = _qde(path)
    names = {c.get("guid"): c.get("name") for c in root.iter(f"{{{qdpx.PROJECT_NS}}}Code")}
    found = set()
    with zipfile.ZipFile(path) as zf:
        for src in root.findall("q:Sources/q:TextSource", NS):
            text = zf.read("sources/" + src.get("plainTextPath").removeprefix("internal://")).decode("utf-8")
            assert text == _texts()[src.get("name")]
            for sel in src.findall("q:PlainTextSelection", NS):
                quote = text[int(sel.get("startPosition")) : int(sel.get("endPosition"))]
                for ref in sel.findall("q:Coding/q:CodeRef", NS):
                    found.add((src.get("name"), names[ref.get("targetGUID")], quote))
    codes = _codes()
    expected = {(c.doc_id, f"{c.field}: {c.value}", c.quote) for c in codes[codes.grounded].itertuples()}
    assert found == expected


def test_ungrounded_codes_span_their_chunk_or_are_left_out(codebook, tmp_path):
    def chunk_wide(path):
        sels = _qde(path).findall("q:Sources/q:TextSource/q:PlainTextSelection", NS)
        return [s for s in sels if (s.get("startPosition"), s.get("endPosition")) == ("0", str(len(TEXT_A)))]

    (sel,) = chunk_wide(_export(codebook, tmp_path, "chunk", name="chunk.qdpx"))
    assert "no such words here" in sel.findtext("q:Description", namespaces=NS)
    assert chunk_wide(_export(codebook, tmp_path, "skip", name="skip.qdpx")) == []


def test_metadata_become_text_variables(codebook, tmp_path):
    root = _qde(_export(codebook, tmp_path))
    (var,) = root.findall("q:Variables/q:Variable", NS)
    assert (var.get("name"), var.get("typeOfVariable")) == ("site", "Text")
    values = {s.get("name"): [v.findtext("q:TextValue", namespaces=NS) for v in s.findall("q:VariableValue", NS)]
              for s in root.findall("q:Sources/q:TextSource", NS)}  # fmt: skip
    assert values == {"a.txt": [], "survey.csv#2": ["north"]}


def test_identical_inputs_give_identical_bytes_and_any_change_shows(codebook, tmp_path):
    one = _export(codebook, tmp_path, name="1.qdpx").read_bytes()
    assert _export(codebook, tmp_path, name="2.qdpx").read_bytes() == one
    changed = _codes()
    changed.loc[1, "value"] = "absent"
    assert _export(codebook, tmp_path, codes=changed, name="3.qdpx").read_bytes() != one
    with zipfile.ZipFile(io.BytesIO(one)) as zf:
        assert {i.date_time for i in zf.infolist()} == {qdpx.ZIP_TIME}


def test_round_trip_gives_the_same_codes(codebook, tmp_path):
    path = _export(codebook, tmp_path, ungrounded="chunk")
    gold, report = qdpx.read_codings(path, codebook, _texts())
    assert list(gold.columns) == ["coder", "doc_id", "field", "value", "start", "end", "quote"]
    assert report.lines() == [] and report.codings == len(gold)
    codes = _codes()
    coded = codes[codes.field != "summary"]
    spans = {c.chunk_id: (c.start, c.end) for c in _chunks().itertuples()}
    expected = {
        (c.doc_id, c.field, c.value, *((c.quote_start, c.quote_end) if c.grounded else spans[c.chunk_id]))
        for c in coded.itertuples()
    }
    assert set(zip(gold.doc_id, gold.field, gold.value, gold.start, gold.end, strict=True)) == expected
    assert set(gold.coder) == {"qualcode: m-1"}
    for g in gold.itertuples():
        assert g.quote == _texts()[g.doc_id][g.start : g.end]


def test_a_human_coding_under_another_name_maps_by_value_and_unmapped_codes_are_listed(codebook, tmp_path):
    path = _export(codebook, tmp_path, ungrounded="skip")

    def edit(xml):
        # a reviewer's program renamed one code to its bare value, and added a code of their own
        xml = xml.replace('name="solidarity: present"', 'name="present"')
        own = '<Code guid="11111111-2222-3333-4444-555555555555" name="interesting" isCodable="true"/>'
        xml = xml.replace("</Codes>", own + "</Codes>")
        fear = qdpx.code_guid("emotions", "fear")
        return xml.replace(f'targetGUID="{fear}"', 'targetGUID="11111111-2222-3333-4444-555555555555"', 1)

    gold, report = qdpx.read_codings(_rewrite(path, tmp_path, edit), codebook, _texts())
    assert ("a.txt", "solidarity", "present") in set(zip(gold.doc_id, gold.field, gold.value, strict=True))
    assert report.unmapped_codes == {"interesting": 1}
    assert "'interesting' (1)" in report.lines()[0]


def test_sources_whose_text_differs_are_reported_and_crlf_is_mapped(codebook, tmp_path):
    path = _export(codebook, tmp_path, ungrounded="skip")
    texts = _texts()
    texts["a.txt"] = texts["a.txt"].replace("terrified", "scared")
    gold, report = qdpx.read_codings(path, codebook, texts)
    assert report.mismatched_sources == ["a.txt"] and set(gold.doc_id) == {"survey.csv#2"}

    # a program on Windows wrote CRLF and counted the CR: positions are mapped back to qualcode's text
    crlf = tmp_path / "crlf.qdpx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(crlf, "w") as dst:
        root = etree.fromstring(src.read("project.qde"))
        for s in root.findall("q:Sources/q:TextSource", NS):
            text = _texts()[s.get("name")]
            for sel in s.findall("q:PlainTextSelection", NS):
                for attr in ("startPosition", "endPosition"):
                    pos = int(sel.get(attr))
                    sel.set(attr, str(pos + text[:pos].count("\n")))
        dst.writestr("project.qde", etree.tostring(root))
        for item in src.namelist():
            if item.startswith("sources/"):
                dst.writestr(item, src.read(item).decode().replace("\n", "\r\n").encode())
    again, report = qdpx.read_codings(crlf, codebook, _texts())
    assert report.lines() == []
    original, _ = qdpx.read_codings(path, codebook, _texts())
    pd.testing.assert_frame_equal(again, original)


def test_not_a_zip(codebook, tmp_path):
    bad = tmp_path / "project.qdpx"
    bad.write_text("<Project/>")
    with pytest.raises(qdpx.QdpxError, match=r"project.qdpx: .*not a zip"):
        qdpx.read_codings(bad, codebook, _texts())


def test_xml_failing_the_schema_names_the_problem(codebook, tmp_path):
    path = _export(codebook, tmp_path)
    broken = _rewrite(path, tmp_path, lambda xml: xml.replace("startPosition=", "beginPosition=", 1))
    with pytest.raises(qdpx.QdpxError, match=r"edited.qdpx: project.qde: does not match the REFI-QDA schema.*line \d+"):
        qdpx.read_codings(broken, codebook, _texts())


def test_a_selection_past_the_end_of_its_source(codebook, tmp_path):
    path = _export(codebook, tmp_path, ungrounded="skip")
    broken = _rewrite(path, tmp_path, lambda xml: xml.replace('endPosition="', 'endPosition="9999', 1))
    with pytest.raises(qdpx.QdpxError, match=rf"edited.qdpx: selection .* of source 'a.txt' spans \d+ to 9999\d*, "
                       rf"outside its text of {len(TEXT_A)} characters"):  # fmt: skip
        qdpx.read_codings(broken, codebook, _texts())


def test_the_validation_stage_reads_a_qdpx_and_lists_what_it_cannot_use(codebook, tmp_path):
    """Registered in gold.READERS: a .qdpx among validation.gold gives the same codings as read_codings, and a
    code the codebook does not know is listed among the validation problems, by file and name, not dropped
    silently."""

    def human(xml):
        # the model's own codings are no human's (test_exports_hardening.py): here they stand for a human coder's
        return xml.replace('"qualcode: m-1"', '"Ana"')

    path = _rewrite(_export(codebook, tmp_path), tmp_path, human, "h.qdpx")
    full, _ = qdpx.read_codings(path, codebook, _texts())
    rows, problems = gold.load([path], codebook, _texts())
    assert problems == []
    key = ["doc_id", "field", "value", "start", "end"]
    assert (
        rows[key].astype(str).sort_values(key).values.tolist() == full[key].astype(str).sort_values(key).values.tolist()
    )
    own = '<Code guid="11111111-2222-3333-4444-555555555555" name="interesting" isCodable="true"/>'
    fear = qdpx.code_guid("emotions", "fear")
    n_fear = int(((full.field == "emotions") & (full.value == "fear")).sum())
    assert n_fear > 0

    def edit(xml):
        xml = xml.replace("</Codes>", own + "</Codes>")
        return xml.replace(f'targetGUID="{fear}"', 'targetGUID="11111111-2222-3333-4444-555555555555"')

    edited = _rewrite(path, tmp_path, edit)
    rows, problems = gold.load([edited], codebook, _texts())
    assert problems == [f"{edited}: codes not in the codebook, their codings skipped: 'interesting' ({n_fear})"]
    assert len(rows) == len(full) - n_fear


def test_no_documents_and_no_codes_still_give_valid_files(codebook, tmp_path):
    """Every input unreadable, or a codebook of text fields alone: the files are still valid, just empty."""
    text_only = codebook.model_copy(update={"fields": [f for f in codebook.fields if f.type == "text"]})
    for cb in (codebook, text_only):
        data = qdpx.project_qdpx(cb, _documents().iloc[0:0], _chunks().iloc[0:0], _codes().iloc[0:0], "m", "o")
        path = tmp_path / "empty.qdpx"
        path.write_bytes(data)
        gold, report = qdpx.read_codings(path, cb, {})
        assert gold.empty and report.lines() == []
        qdpx.check_xml(qdpx.codebook_qdc(cb, "o"), "qdc", qdpx.CODEBOOK_XSD)


def test_characters_xml_cannot_hold_are_replaced(codebook, tmp_path):
    """A control character in a document's quoted words, or in a metadata value: the project is still valid XML,
    and its text files keep the document's text exactly."""
    docs = _documents()
    docs.loc[0, "text"] = TEXT_A.replace("I was terrified", "I\x07was terrified")  # same length: offsets hold
    docs.loc[1, "meta_site"] = "north\x1b"
    path = tmp_path / "odd.qdpx"
    path.write_bytes(qdpx.project_qdpx(codebook, docs, _chunks(), _codes(), "m-1", "qualcode test"))
    root = _qde(path)
    names = [s.get("name") for s in root.iter(f"{{{qdpx.PROJECT_NS}}}PlainTextSelection")]
    assert "I\ufffdwas terrified of catching it" in names
    assert "north\ufffd" in [v.text for v in root.iter(f"{{{qdpx.PROJECT_NS}}}TextValue")]
    gold, report = qdpx.read_codings(path, codebook, dict(zip(docs.doc_id, docs.text, strict=True)))
    assert report.lines() == [] and len(gold) > 0


def test_a_project_streamed_from_many_documents_is_checked_as_it_is_read_back(codebook, tmp_path):
    """The project is written a source at a time and validated while read back: a project that breaks the schema
    anywhere, even after thousands of sources, is refused with its name; a valid one passes and counts match."""
    docs, chunks, codes = _documents(), _chunks(), _codes()
    with open(tmp_path / "p.qdpx", "w+b") as fh:
        counts = qdpx.write_project(fh, codebook, docs, chunks, codes, "m-1", "qualcode test")
    root = _qde(tmp_path / "p.qdpx")
    assert counts == {
        "sources": len(docs),
        "selections": len(list(root.iter(f"{{{qdpx.PROJECT_NS}}}PlainTextSelection"))),
        "codings": len(list(root.iter(f"{{{qdpx.PROJECT_NS}}}Coding"))),
    }
    source = '<TextSource guid="{g}" name="d{i}" plainTextPath="internal://d{i}.txt"/>'
    ok = [source.format(g=qdpx.guid("s", i), i=i) for i in range(3000)]
    users = '<Users><User guid="{g}" name="u"/></Users>'.format(g=qdpx.guid("u"))
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<Project xmlns="{qdpx.PROJECT_NS}" name="p">{users}<Sources>'
    tail = "</Sources></Project>\n"
    qdpx.check_stream(io.BytesIO((head + "".join(ok) + tail).encode()), "big.qde")
    broken = [*ok, '<TextSource name="no guid"/>']
    with pytest.raises(qdpx.QdpxError, match="big.qde: does not match the REFI-QDA schema"):
        qdpx.check_stream(io.BytesIO((head + "".join(broken) + tail).encode()), "big.qde")


@pytest.mark.parametrize("parts", [("source", "a.txt"), ("coding", "G-1", "G-2", "qualcode: m"), ("x", 3, "é🙁")])
def test_guids_are_rfc_4122_version_5_uuids(parts):
    """A GUID is what uuid.uuid5 gives for what it identifies, so another program can recompute it."""
    assert qdpx.guid(*parts) == str(uuid.uuid5(qdpx.NAMESPACE, "\x1f".join(map(str, parts)))).upper()
