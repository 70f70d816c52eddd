"""Human decisions applied to the model's codes: from a filled review.csv and from a .qdpx a reviewer worked on."""

from __future__ import annotations

import zipfile

import pandas as pd
import pytest
from lxml import etree

from qualcode.exchange import corrections, qdpx, review

from test_review import CHUNKS, CODES, CODINGS, DOCUMENTS

NS = {"q": qdpx.PROJECT_NS}


def _filled(codebook, tmp_path, edits: dict[tuple[str, str], dict[str, str]]):
    """review.csv as written, with some rows filled in as a reviewer would."""
    rows = review.review_rows(codebook, CHUNKS, CODINGS, CODES)
    for (chunk_id, field), values in edits.items():
        at = rows.index[(rows.chunk_id == chunk_id) & (rows.field == field)][0]
        for col, v in values.items():
            rows.loc[at, col] = v
    path = tmp_path / "decisions.csv"
    rows.to_csv(path, index=False, encoding="utf-8-sig")
    return path


def _apply_csv(codebook, path) -> pd.DataFrame:
    decisions = corrections.read_review_csv(path, codebook, CHUNKS, "reviewer")
    return pd.DataFrame(corrections.apply_review_csv(CODES, CHUNKS, decisions, "m-1"))


def test_review_csv_decisions_are_applied_and_say_who_decided(codebook, tmp_path):
    path = _filled(codebook, tmp_path, {
        ("c1", "emotions"): {"decision": "correct", "corrected_value": "fear; none", "reviewer": "Ana"},
        ("c1", "solidarity"): {"decision": "reject"},
        ("c1", "own_health"): {"decision": "Accept "},
        ("c3", "solidarity"): {"decision": "correct", "corrected_value": "absent"},
    })  # fmt: skip
    out = _apply_csv(codebook, path).set_index(["chunk_id", "field", "value"])
    assert out.loc[("c1", "emotions", "fear"), ["decision", "decided_by"]].tolist() == ["corrected", "Ana"]
    assert out.loc[("c1", "emotions", "fear"), "quote"] == "I was terrified of catching it"  # the model's evidence
    assert out.loc[("c1", "emotions", "none"), ["decision", "decided_by"]].tolist() == ["added", "Ana"]
    assert ("c1", "emotions", "pride") not in out.index
    assert ("c1", "solidarity", "present") not in out.index
    assert out.loc[("c1", "own_health", "false"), ["decision", "decided_by"]].tolist() == ["accepted", "reviewer"]
    assert out.loc[("c3", "solidarity", "absent"), "decision"] == "added"  # a failed chunk, coded by hand
    untouched = CODES[CODES.chunk_id == "c2"]
    assert len(out.loc["c2"]) == len(untouched)
    assert set(out.loc["c2"].decided_by) == {"qualcode: m-1"} and set(out.loc["c2"].decision) == {"unreviewed"}


def test_review_csv_as_human_codings(codebook, tmp_path):
    path = _filled(codebook, tmp_path, {
        ("c1", "emotions"): {"decision": "correct", "corrected_value": "none"},
        ("c2", "emotions"): {"decision": "accept", "reviewer": "Ana"},
        ("c2", "solidarity"): {"decision": "reject"},
    })  # fmt: skip
    decisions = corrections.read_review_csv(path, codebook, CHUNKS, "reviewer")
    gold = corrections.gold_from_review_csv(decisions, CODES, CHUNKS)
    assert list(gold.columns) == qdpx.GOLD_COLUMNS
    c1, c2 = CHUNKS.iloc[0], CHUNKS.iloc[1]
    assert gold.values.tolist() == [
        ["reviewer", "a.txt", "emotions", "none", c1.start, c1.end, None],
        ["Ana", "a.txt", "emotions", "pride", c2.start, c2.end, None],
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"decision": "correct", "corrected_value": "fear; joy"},
         r"decisions.csv, row 2: 'joy' is not a value of field 'emotions'; allowed: fear, pride, none"),
        ({"decision": "correct", "corrected_value": ""}, r"row 2: decision 'correct' needs a corrected_value"),
        ({"decision": "maybe"}, r"row 2: decision 'maybe' is not one of accept, reject, correct"),
        ({"decision": "accept", "chunk_id": "zzz"}, r"row 2: chunk 'zzz' is not in this run's chunks"),
        ({"decision": "accept", "field": "mood"}, r"row 2: field 'mood' is not in the codebook"),
    ],
)  # fmt: skip
def test_a_bad_correction_names_its_row(codebook, tmp_path, edit, message):
    path = _filled(codebook, tmp_path, {("c1", "emotions"): edit})
    with pytest.raises(corrections.CorrectionError, match=message):
        corrections.read_review_csv(path, codebook, CHUNKS, "reviewer")


def test_a_reviewed_qdpx_is_applied(codebook, tmp_path):
    """The reviewer opened the export, removed one of the model's codings and coded a passage of their own."""
    codes = CODES.assign(doc_id=CODES.doc_id)
    exported = tmp_path / "project.qdpx"
    exported.write_bytes(qdpx.project_qdpx(codebook, DOCUMENTS.assign(source_file="a", format="txt"), CHUNKS, codes,
                                           "m-1", "qualcode test", "chunk"))  # fmt: skip
    text = DOCUMENTS.text[0]
    pride = qdpx.code_guid("emotions", "pride")
    reviewed = tmp_path / "reviewed.qdpx"
    with zipfile.ZipFile(exported) as src, zipfile.ZipFile(reviewed, "w") as dst:
        root = etree.fromstring(src.read("project.qde"))
        users = root.find("q:Users", NS)
        etree.SubElement(users, f"{{{qdpx.PROJECT_NS}}}User", guid="AAAAAAAA-0000-0000-0000-000000000001", name="Ana")
        source = root.find("q:Sources/q:TextSource", NS)
        # remove the model's 'pride' on the first quote
        at = str(text.index("I was terrified"))
        (first,) = [s for s in source.findall("q:PlainTextSelection", NS) if s.get("startPosition") == at]
        for coding in first.findall("q:Coding", NS):
            if coding.find("q:CodeRef", NS).get("targetGUID") == pride:
                first.remove(coding)
        # Ana codes "the night bus stopped running" as solidarity: absent
        start = text.index("the night bus")
        sel = etree.Element(
            f"{{{qdpx.PROJECT_NS}}}PlainTextSelection",
            guid="AAAAAAAA-0000-0000-0000-000000000002",
            startPosition=str(start),
            endPosition=str(start + len("the night bus stopped running")),
        )
        coding = etree.SubElement(
            sel,
            f"{{{qdpx.PROJECT_NS}}}Coding",
            guid="AAAAAAAA-0000-0000-0000-000000000003",
            creatingUser="AAAAAAAA-0000-0000-0000-000000000001",
        )
        etree.SubElement(coding, f"{{{qdpx.PROJECT_NS}}}CodeRef", targetGUID=qdpx.code_guid("solidarity", "absent"))
        source.insert(list(source).index(first) + 1, sel)
        dst.writestr("project.qde", etree.tostring(root))
        for item in src.namelist():
            if item != "project.qde":
                dst.writestr(item, src.read(item))  # fmt: skip
    gold, report = qdpx.read_codings(reviewed, codebook, dict(zip(DOCUMENTS.doc_id, DOCUMENTS.text, strict=True)))
    assert report.lines() == []
    out = pd.DataFrame(corrections.apply_qdpx(CODES, CHUNKS, gold, "m-1", "chunk")).set_index(
        ["chunk_id", "field", "value"]
    )
    assert ("c1", "emotions", "pride") not in out.index  # removed in the QDA program
    assert out.loc[("c1", "emotions", "fear"), "decision"] == "unreviewed"
    # the new coding lies in the second chunk only: Ana's value replaces the model's 'present' there
    assert out.loc[("c2", "solidarity", "absent"), ["decision", "decided_by"]].tolist() == ["added", "Ana"]
    assert ("c2", "solidarity", "present") not in out.index
    assert ("c1", "solidarity", "present") in out.index
    assert ("c2", "emotions", "pride") in out.index  # untouched
