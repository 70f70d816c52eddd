"""Human codings: both layouts, both file types, and every bad row named with its file, row and allowed values."""

from __future__ import annotations

import pandas as pd
import pytest

from qualcode.inputs import codebook
from qualcode.validity import gold
from qualcode.validity.gold import GoldError

from conftest import DATA

CB = codebook.load(DATA / "codebook.yaml")
CHOICE = next(f for f in CB.fields if f.type == "single_choice")
MULTI = next(f for f in CB.fields if f.type == "multiple_choice")
TEXT = "I was scared every day. Then my colleague covered my shift, and I cried."
TEXTS = {"a.txt": TEXT, "b.txt": "Nothing happened."}


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tidy_csv_with_offsets_and_quotes(tmp_path):
    v1, v2 = MULTI.values[0].name, MULTI.values[1].name
    f = _write(tmp_path / "g.csv", "coder,doc_id,field,value,start,end,quote\n"
               f"ann,a.txt,{MULTI.name},{v1},0,22,\n"
               f"ann,a.txt,{MULTI.name},{v2},,,my colleague covered my shift\n"
               "ann,b.txt,,,,,\n")  # fmt: skip
    rows, problems = gold.load([f], CB, TEXTS, unit="chunk")
    assert problems == []
    assert rows[["coder", "doc_id", "field", "value"]].values.tolist()[:2] == [
        ["ann", "a.txt", MULTI.name, v1], ["ann", "a.txt", MULTI.name, v2]]  # fmt: skip
    located = rows.iloc[1]
    assert TEXT[located.start : located.end] == "my colleague covered my shift"
    assert rows.iloc[2].doc_id == "b.txt" and pd.isna(rows.iloc[2].field)  # read, nothing found


def test_wide_csv_one_file_per_coder_and_with_a_coder_column(tmp_path):
    v1, v2 = MULTI.values[0].name, MULTI.values[1].name
    per_coder = _write(tmp_path / "ben.csv", f"doc_id,{MULTI.name},{CHOICE.name}\n"
                       f"a.txt,{v1}; {v2},{CHOICE.values[0].name}\nb.txt,,\n")  # fmt: skip
    rows, _ = gold.load([per_coder], CB, TEXTS)
    assert set(rows.coder) == {"ben"}
    assert sorted(rows[rows.doc_id == "a.txt"].value) == sorted([v1, v2, CHOICE.values[0].name])
    assert rows[rows.doc_id == "b.txt"].field.isna().all()  # the coder read b.txt and found nothing
    with_column = _write(tmp_path / "all.csv", f"coder,doc_id,{MULTI.name}\ncid,a.txt,{v1}\ndee,a.txt,{v2}\n")
    rows, _ = gold.load([with_column], CB, TEXTS)
    assert rows[["coder", "value"]].values.tolist() == [["cid", v1], ["dee", v2]]


def test_parquet_is_read_like_csv(tmp_path):
    df = pd.DataFrame({"coder": ["ann"], "doc_id": ["a.txt"], "field": [CHOICE.name], "value": [CHOICE.values[1].name],
                       "start": [3], "end": [8]})  # fmt: skip
    df.to_parquet(tmp_path / "g.parquet")
    rows, _ = gold.load([tmp_path / "g.parquet"], CB, TEXTS, unit="chunk")
    assert rows.iloc[0][["value", "start", "end"]].tolist() == [CHOICE.values[1].name, 3, 8]


def test_boolean_answers_are_normalised(tmp_path):
    field = next(f for f in CB.fields if f.type == "boolean")
    f = _write(tmp_path / "g.csv", f"coder,doc_id,field,value\nann,a.txt,{field.name},Yes\nann,b.txt,{field.name},0\n")
    rows, _ = gold.load([f], CB, TEXTS)
    assert rows.value.tolist() == ["true", "false"]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("ann,zzz.txt,{multi},{v}", "unknown document 'zzz.txt'"),
        ("ann,a.txt,nonsense,{v}", "unknown field 'nonsense'; allowed: "),
        ("ann,a.txt,{multi},nonsense", "value 'nonsense' is not allowed for field '{multi}'; allowed: {allowed}"),
        (",a.txt,{multi},{v}", "no coder"),
        ("ann,a.txt,{multi},{v},5,2", "start 5, end 2 are not a span of 'a.txt'"),
    ],
)
def test_a_bad_row_names_the_file_the_row_and_what_is_allowed(tmp_path, line, expected):
    fill = {"multi": MULTI.name, "v": MULTI.values[0].name, "allowed": ", ".join(v.name for v in MULTI.values)}
    f = _write(tmp_path / "g.csv", "coder,doc_id,field,value,start,end\n"
               f"ann,a.txt,{MULTI.name},{MULTI.values[0].name},,\n" + line.format(**fill) + "\n")  # fmt: skip
    with pytest.raises(GoldError) as err:
        gold.load([f], CB, TEXTS)
    assert f"{f}, row 3: " + expected.format(**fill) in str(err.value)
    rows, problems = gold.load([f], CB, TEXTS, on_error="skip")  # listed and skipped, the good row kept
    assert len(rows) == 1 and len(problems) == 1 and problems[0].startswith(f"{f}, row 3: ")


def test_text_fields_are_not_compared(tmp_path):
    text_field = next(f for f in CB.fields if f.type == "text")
    f = _write(tmp_path / "g.csv", f"coder,doc_id,field,value\nann,a.txt,{text_field.name},something\n")
    with pytest.raises(GoldError, match="a text field: free text is not compared"):
        gold.load([f], CB, TEXTS)


def test_chunk_units_need_a_place_for_each_code(tmp_path):
    f = _write(tmp_path / "g.csv", f"coder,doc_id,field,value,quote\nann,a.txt,{MULTI.name},{MULTI.values[0].name},\n"
               f"ann,a.txt,{MULTI.name},{MULTI.values[1].name},words not there\n")  # fmt: skip
    assert len(gold.load([f], CB, TEXTS, unit="document")[0]) == 2  # a document needs no place
    rows, problems = gold.load([f], CB, TEXTS, unit="chunk", on_error="skip")
    assert rows.empty
    assert "row 2: validation.unit is chunk: each code needs start and end, or a quote" in problems[0]
    assert "row 3: quote 'words not there' is not in document 'a.txt'" in problems[1]


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(GoldError, match=r"g\.xlsx: human codings are read from \.csv, \.parquet, \.qdpx files"):
        gold.load([tmp_path / "g.xlsx"], CB, TEXTS)
    with pytest.raises(GoldError, match="no such file"):
        gold.load([tmp_path / "missing.csv"], CB, TEXTS)
    f = _write(tmp_path / "g.csv", "coder,field,value\nann,x,y\n")
    with pytest.raises(GoldError, match=r"g\.csv: no doc_id column \(found: coder, field, value\)"):
        gold.load([f], CB, TEXTS)
    bad = _write(tmp_path / "n.csv", "coder,doc_id,field,value,start,end\nann,a.txt,x,y,one,2\n")
    with pytest.raises(GoldError, match=r"n\.csv, row 2: start must be a whole number"):
        gold.load([bad], CB, TEXTS)


def test_another_reader_registers_in_one_line(tmp_path, monkeypatch):
    def read_fake(path, cb, texts):
        row = {"coder": "x", "doc_id": "a.txt", "field": CHOICE.name, "value": CHOICE.values[0].name}
        return pd.DataFrame([{**row, "start": pd.NA, "end": pd.NA, "quote": pd.NA}])

    monkeypatch.setitem(gold.READERS, ".fake", read_fake)
    rows, _ = gold.load([_write(tmp_path / "g.fake", "")], CB, TEXTS)
    assert rows.coder.tolist() == ["x"]


def test_a_pilot_leaves_out_codings_of_documents_outside_its_sample(tmp_path):
    """A pilot reads a sample: the human codings of the other documents are not errors there (the full run compares
    them), but a file none of whose documents is in the corpus still is, and so is a bad row of a sampled one."""
    others = [f"other_{i}.txt" for i in range(3)]
    body = "".join(f"ann,{d},{MULTI.name},{MULTI.values[0].name}\n" for d in others)
    f = _write(tmp_path / "g.csv", f"coder,doc_id,field,value\nann,a.txt,{MULTI.name},{MULTI.values[0].name}\n{body}")
    with pytest.raises(GoldError, match="unknown document 'other_0.txt'"):
        gold.load([f], CB, TEXTS)
    rows, problems = gold.load([f], CB, TEXTS, sample=True)
    assert list(rows.doc_id) == ["a.txt"]
    assert problems == [f"{f}: {len(others)} rows about {len(others)} documents outside this pilot's sample left out "
                        "(the full run compares them)"]  # fmt: skip
    only_others = _write(tmp_path / "o.csv", f"coder,doc_id,field,value\n{body}")
    rows, problems = gold.load([only_others], CB, TEXTS, sample=True)  # a sample may miss every coded document
    assert rows.empty and len(problems) == 1
    bad = _write(tmp_path / "b.csv", f"coder,doc_id,field,value\nann,a.txt,nonsense,x\n{body}")
    with pytest.raises(GoldError, match="unknown field 'nonsense'"):
        gold.load([bad], CB, TEXTS, sample=True)
