"""The researcher's workflow (issue 13), tested on inputs shaped like real exports (tests/researcher_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from researcher_data import oral_history_csv, survey_cp1252_csv

from qualcode.config import IngestConfig, TableInput
from qualcode.errors import NothingToCode
from qualcode.inputs import ingest


def _inputs(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "inputs"
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _ingest(root: Path, cfg: IngestConfig):
    files = ingest.discover(root, cfg.include)
    docs, problems = ingest.ingest(files, root, cfg)
    ingest.check_enough(docs, problems, len(files), cfg.max_skipped_share)
    return docs, problems


# -- 1. a run with nothing to code stops, with the reason -------------------------------------------------------


def test_wrong_text_column_stops_with_the_reason(tmp_path):
    root = _inputs(tmp_path, {"survey.csv": survey_cp1252_csv()})
    cfg = IngestConfig(table=TableInput(text_column="response"))
    with pytest.raises(NothingToCode) as err:
        _ingest(root, cfg)
    message = str(err.value)
    assert message.startswith("no documents to code: the input file could not be read")
    assert "survey.csv: no text column 'response'" in message and "answer" in message
    assert "ingest.table.text_column" in message


def test_more_than_the_allowed_share_skipped_stops_naming_the_setting(tmp_path):
    good = {f"interviews/{i:02d}.txt": f"R: answer {i}".encode() for i in range(3)}
    bad = {f"exports/{i:02d}.csv": oral_history_csv() for i in range(4)}  # no `text` column in these
    root = _inputs(tmp_path, {**good, **bad})
    with pytest.raises(NothingToCode) as err:
        _ingest(root, IngestConfig())
    message = str(err.value)
    assert "4 of 7 input files (57%) could not be read, more than ingest.max_skipped_share (50%)" in message
    assert "exports/00.csv: no text column 'text'" in message
    # the researcher may choose to go on without them
    docs, problems = _ingest(root, IngestConfig(max_skipped_share=0.6))
    assert len(docs) == 3 and len(problems) == 4


def test_a_few_unreadable_files_do_not_stop_the_run(tmp_path):
    files = {f"interviews/{i:02d}.txt": f"R: answer {i}".encode() for i in range(3)}
    root = _inputs(tmp_path, {**files, "broken.txt": b""})
    docs, problems = _ingest(root, IngestConfig())
    assert len(docs) == 3 and [p.source_file for p in problems] == ["broken.txt"]


# -- 8. messages in the researcher's words ----------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_misspelt_setting_names_file_line_and_the_closest_key(tmp_path):
    from qualcode import config
    from qualcode.errors import ConfigError

    mine = _write(tmp_path / "my-config.yaml", "llm:\n  provider: openai\n  model: gpt-4o-mini\n  temprature: 0.2\n")
    with pytest.raises(ConfigError) as err:
        config.load(Path("config/config.yaml"), mine)
    assert str(err.value) == f"{mine}, line 4: llm.temprature: unknown setting; did you mean `temperature`?"


def test_unknown_setting_without_a_close_match_lists_the_valid_ones(tmp_path):
    from qualcode import config
    from qualcode.errors import ConfigError

    with pytest.raises(ConfigError, match="chunking.size: unknown setting; the settings here are encoding, max_tokens"):
        config.load(_write(tmp_path / "c.yaml", "chunking:\n  size: 300\n"))


def test_yaml_syntax_error_gives_the_line(tmp_path, capsys):
    from qualcode import cli

    broken = _write(tmp_path / "my-config.yaml", "llm:\n  provider: openai\n  temperature: [0\nchunking: {}\n")
    with pytest.raises(SystemExit):
        cli.main(["check", "--config", "config/config.yaml", "--config", str(broken)])
    err = capsys.readouterr().err
    assert f"{broken}, line 4, column 9: config file is not valid YAML" in err
    assert "flow sequence that starts on line 3" in err


def test_codebook_errors_name_fields_and_values(tmp_path):
    import yaml

    from qualcode.errors import ConfigError
    from qualcode.inputs import codebook

    raw = yaml.safe_load(Path("config/codebook.yaml").read_text(encoding="utf-8"))
    raw["fields"][0]["values"][3]["definiton"] = raw["fields"][0]["values"][3].pop("definition")
    path = _write(tmp_path / "codebook.yaml", yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        codebook.load(path)
    value = raw["fields"][0]["values"][3]["name"]
    message = str(err.value)
    assert (
        f"field '{raw['fields'][0]['name']}', value '{value}', definiton: unknown key; did you mean `definition`?"
        in message
    )
    assert "fields.0" not in message and "values.3" not in message
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "definiton" in text)
    assert f"{path}, line {line}: " in message


@pytest.mark.parametrize(
    ("llm", "fragments"),
    [
        ({"model": "gpt-4o-mini"}, ("'gpt-4o-mini' is not a .gguf file", "llm.provider: openai")),
        ({"provider": "openai", "model": "models/llama.Q4.gguf"}, ("is a .gguf file", "llm.provider: local")),
    ],
)
def test_provider_is_checked_against_the_model(tmp_path, llm, fragments):
    from qualcode import config
    from qualcode.errors import ConfigError

    mine = _write(tmp_path / "m.yaml", "llm:\n" + "".join(f"  {k}: {v}\n" for k, v in llm.items()))
    with pytest.raises(ConfigError) as err:
        config.load(Path("config/config.yaml"), mine)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_grounding_counts_say_what_they_count():
    import pandas as pd

    from qualcode.outputs import provenance

    # one chunk, a multiple-choice field with two values sharing one quote, and a text field without a quote
    codes = pd.DataFrame(
        {
            "chunk_id": ["c1", "c1", "c1"],
            "field": ["emotions", "emotions", "summary"],
            "grounding": ["exact", "exact", "not_asked"],
        }
    )
    empty = pd.DataFrame({"cache_hit": pd.Series([], dtype=bool)})
    for col in ("attempts", "retries", "reasks", "tokens_in", "tokens_out", "tokens_cached", "cost"):
        empty[col] = pd.Series([], dtype="float64")
    empty["answered_at"] = empty["batch_id"] = pd.Series([], dtype=object)
    tables = {
        "documents": pd.DataFrame({"doc_id": ["d"]}),
        "chunks": pd.DataFrame({"chunk_id": ["c1"]}),
        "codings": pd.DataFrame({"status": ["coded"]}),
        "codes": codes,
        "llm_calls": empty,
        "failures": pd.DataFrame({"stage": pd.Series([], dtype=str)}),
    }
    counts = provenance.counts(tables)
    assert counts["quotes"] == counts["quotes_grounded"] == 1  # one per chunk and field
    assert counts["codes_rows_by_grounding"] == {"exact": 2, "not_asked": 1}  # codes.parquet's rows
    assert sum(counts["codes_rows_by_grounding"].values()) == len(codes)


# -- 2. transcripts exported as tables --------------------------------------------------------------------------

ORAL_TABLE = TableInput(group_column="interview", order_column="seq", speaker_column="speaker", text_column="words")


def _read(tmp_path: Path, name: str, content: bytes, cfg: IngestConfig):
    root = _inputs(tmp_path, {name: content})
    docs, problems = ingest.ingest(ingest.discover(root, cfg.include), root, cfg)
    assert problems == []
    return docs


def test_transcript_table_becomes_one_document_per_interview_as_a_txt_would(tmp_path):
    from researcher_data import ORAL_HISTORY_ROWS, oral_history_as_txt

    docs = _read(tmp_path / "t", "archive.csv", oral_history_csv(), IngestConfig(table=ORAL_TABLE))
    interviews = list(dict.fromkeys(row[0] for row in ORAL_HISTORY_ROWS))
    assert [d.doc_id for d in docs] == [f"archive.csv#{i}" for i in interviews]
    for doc, interview in zip(docs, interviews, strict=True):
        txt = oral_history_as_txt(interview)
        [as_txt] = _read(tmp_path / interview, "t.txt", txt.encode(), IngestConfig())
        assert doc.text == as_txt.text == txt
        assert doc.turns == as_txt.turns  # the same speaker turns, label by label, offset by offset
        assert doc.metadata == {"interview": interview}  # per-row tags are not a fact about the interview


def test_transcript_rows_follow_the_order_column_and_lose_their_entities(tmp_path):
    [doc, _] = _read(tmp_path, "archive.csv", oral_history_csv(), IngestConfig(table=ORAL_TABLE))
    assert doc.text.index("What happened when the lockdown began?") < doc.text.index("Flour ran out")
    assert "Flour ran out in the second week \u2014 nobody had any." in doc.text
    assert "Tom & I" in doc.text and "&#" not in doc.text and "&amp;" not in doc.text
    # a stage note without a speaker opens the document, outside any turn
    assert doc.text.startswith("(Recording starts") and doc.turns[0].start > 0
    kept = IngestConfig(table=ORAL_TABLE.model_copy(update={"unescape_html": False}))
    [raw, _] = _read(tmp_path / "raw", "archive.csv", oral_history_csv(), kept)
    assert "&#8212;" in raw.text


def test_speaker_aliases_name_the_speakers_in_tables_and_txt_alike(tmp_path):
    from researcher_data import ORAL_HISTORY_ALIASES, oral_history_as_txt

    cfg = IngestConfig(table=ORAL_TABLE, speaker_aliases=ORAL_HISTORY_ALIASES)
    [doc, _] = _read(tmp_path / "t", "archive.csv", oral_history_csv(), cfg)
    assert doc.text == oral_history_as_txt("oh-07", ORAL_HISTORY_ALIASES)
    assert [t.speaker for t in doc.turns][:3] == ["Maya Reyes", "Amira Khalil", "Maya Reyes"]
    # in a .txt the labels stay as written; the turns take the names
    [txt] = _read(tmp_path / "x", "t.txt", oral_history_as_txt("oh-07").encode(), cfg)
    assert "MR: Could you" in txt.text and {t.speaker for t in txt.turns} == {"Maya Reyes", "Amira Khalil"}


def test_one_interview_per_file_with_a_speaker_column(tmp_path):
    # the shape of an archive that exports each interview to its own file: speaker, words, tags, timestamp
    rows = (
        b"speaker,words,tags,timestamp\n,(Intro music),,\nDB:,Where do you write?,,0:00:10\nLG:,At the table.,place,\n"
    )
    cfg = IngestConfig(table=TableInput(speaker_column="speaker", text_column="words", id_column=None))
    [doc] = _read(tmp_path, "gluck.csv", rows, cfg)
    assert doc.doc_id == "gluck.csv"
    assert doc.text == "(Intro music)\n\nDB: Where do you write?\n\nLG: At the table."
    assert [(t.speaker, doc.text[t.start : t.end]) for t in doc.turns] == [
        ("DB", "DB: Where do you write?"),
        ("LG", "LG: At the table."),
    ]


def test_chosen_metadata_that_varies_within_an_interview_is_an_error(tmp_path):
    from qualcode.errors import InputError

    table = ORAL_TABLE.model_copy(update={"metadata_columns": ["tags"]})
    root = _inputs(tmp_path, {"archive.csv": oral_history_csv()})
    with pytest.raises(InputError, match="metadata column 'tags' varies within group 'oh-07'"):
        ingest.read_document_file(root / "archive.csv", root, IngestConfig(table=table))


# -- 3. order and identity --------------------------------------------------------------------------------------


def test_numbered_rows_keep_the_files_order_everywhere(tmp_path):
    from researcher_data import SURVEY_ANSWERS

    from qualcode.outputs import tables

    cfg = IngestConfig(table=TableInput(id_column=None, text_column="answer"))
    docs = _read(tmp_path, "survey.csv", survey_cp1252_csv(), cfg)
    expected = [f"survey.csv#{i}" for i, answer in enumerate(SURVEY_ANSWERS, start=1) if answer]
    assert [d.doc_id for d in docs] == expected  # #1, #2, #4 ... #10, #11, #12: not #1, #10, #11, #12, #2
    assert tables.documents_table(docs).column("doc_id").to_pylist() == expected
    assert docs[1].text == SURVEY_ANSWERS[1] and docs[0].encoding == "cp1252"


def test_files_are_read_with_numbers_in_their_names_in_order(tmp_path):
    names = ["interview_10.txt", "interview_2.txt", "interview_1.txt"]
    root = _inputs(tmp_path, {name: b"R: words" for name in names})
    assert [p.name for p in ingest.discover(root, ["*.txt"])] == [
        "interview_1.txt",
        "interview_2.txt",
        "interview_10.txt",
    ]


def test_a_column_without_a_header_is_named_as_the_file_has_it(tmp_path):
    from qualcode.errors import InputError

    root = _inputs(tmp_path, {"survey.csv": survey_cp1252_csv()})
    with pytest.raises(InputError) as err:
        ingest.read_document_file(root / "survey.csv", root, IngestConfig())
    message = str(err.value)
    assert 'columns: column 1 (empty header; select it with ""), respondent, site, question, answer' in message
    assert "Unnamed" not in message
    # selected with "": the row numbers the export wrote become the ids
    cfg = IngestConfig(table=TableInput(id_column="", text_column="answer"))
    docs = ingest.read_document_file(root / "survey.csv", root, cfg)
    assert docs[0].doc_id == "survey.csv#1" and docs[-1].doc_id == "survey.csv#12"
    # by default it is not metadata (it holds row numbers); the named columns are, in the file's order
    cfg = IngestConfig(table=TableInput(id_column="respondent", text_column="answer"))
    [first, *_] = ingest.read_document_file(root / "survey.csv", root, cfg)
    assert list(first.metadata) == ["site", "question"]


# -- 6. codebook rules the model must obey ------------------------------------------------------------------------


def _rules_codebook(**summary):
    from qualcode.inputs import codebook

    raw = {
        "name": "Worry narratives",
        "version": "2",
        "fields": [
            {
                "name": "worries",
                "type": "multiple_choice",
                "description": "What the writer worries about.",
                "min_items": 1,
                "values": [
                    {"name": "health", "definition": "Own or family health."},
                    {"name": "money", "definition": "Income, rent, debt."},
                    {"name": "none", "definition": "No worry is expressed. Use alone.", "exclusive": True},
                ],
            },
            {"name": "summary", "type": "text", "description": "One sentence.", "quote": False, **summary},
        ],
    }
    return codebook.Codebook.model_validate(raw)


def _answer(worries, summary="The writer fears for her mother."):
    import json

    return json.dumps({"worries": {"value": worries, "quote": ""}, "summary": {"value": summary}})


@pytest.mark.parametrize(
    ("worries", "summary", "message"),
    [
        (["health", "none"], "Fine.", "worries: 'none' must be used alone, not with 'health'"),
        ([], "Fine.", "worries"),  # min_items 1: the schema's minItems
        (["money"], "][", "summary: the answer '][' is empty; write what the passage says"),
        (["money"], "", "summary"),  # the schema's minLength
    ],
)
def test_codebook_rules_make_an_answer_invalid(worries, summary, message):
    from qualcode.coding.validate import AnswerValidator
    from qualcode.errors import AnswerError

    cb = _rules_codebook(allow_empty=False)
    check = AnswerValidator(cb.answer_schema(), cb.answer_model())
    with pytest.raises(AnswerError) as err:
        check(_answer(worries, summary))
    assert message in str(err.value)
    check(_answer(["none"]))  # used alone: valid


def test_an_empty_answer_that_may_be_empty_is_kept_and_counted():
    import json

    from qualcode.coding.validate import AnswerValidator

    cb = _rules_codebook()  # allow_empty defaults to true
    answer = AnswerValidator(cb.answer_schema(), cb.answer_model())(_answer(["money"], "]["))
    assert answer["summary"]["value"] == "]["
    assert cb.empty_fields(answer) == ["summary"]
    assert cb.empty_fields(json.loads(_answer(["money"], "Rent is due."))) == []


def test_rules_in_the_validator_leave_the_default_requests_unchanged():
    """`exclusive` is checked by the validator, not sent: the example codebook's requests (and so every cached
    answer) are the same with and without it."""
    import yaml

    from qualcode import config
    from qualcode.coding import coder, prompts
    from qualcode.inputs import codebook
    from qualcode.records import Chunk

    cfg = config.load("config/config.yaml")
    raw = yaml.safe_load(Path("config/codebook.yaml").read_text(encoding="utf-8"))
    assert any(v.get("exclusive") for f in raw["fields"] for v in f.get("values", []))
    plain = yaml.safe_load(Path("config/codebook.yaml").read_text(encoding="utf-8"))
    for f in plain["fields"]:
        for v in f.get("values", []):
            v.pop("exclusive", None)
    chunk = Chunk("c1", "interviews/01.txt", 0, 0, 20, 6, ("R",), "R: We had no masks.")
    keys = []
    for book in (raw, plain):
        cb = codebook.parse(book, "config/codebook.yaml")
        templates = prompts.load("config/prompts/system.j2", "config/prompts/user.j2", cb, cfg.llm.structured_output)
        keys.append(coder.Requests(cfg.llm, templates)(chunk).key())
    assert keys[0] == keys[1]


def test_exclusive_value_used_with_another_is_reasked(tmp_path, fake_server, monkeypatch):
    import asyncio
    import json

    from qualcode import config
    from qualcode.coding import cache, coder, prompts
    from qualcode.records import Chunk

    cb = _rules_codebook()

    def answer(body):
        reasked = "That answer is invalid" in body["messages"][-1]["content"]
        return _answer(["health"] if reasked else ["health", "none"])

    fake_server.answer_fn = answer
    monkeypatch.setenv("QUALCODE_TEST_KEY", "test-key-for-the-fake-server")
    llm = config.LLMConfig(provider="openai", base_url=fake_server.base_url, model="fake",
                           structured_output="json_schema", api_key_env="QUALCODE_TEST_KEY")  # fmt: skip
    templates = prompts.load("config/prompts/system.j2", "config/prompts/user.j2", cb, "json_schema")
    with cache.AnswerCache(tmp_path / "cache") as answers:
        text = "I lie awake thinking about my mother and the rent."
        [result] = asyncio.run(
            coder.Coder(llm, templates, answers).code_all([Chunk("c1", "d", 0, 0, 52, 12, (), text)])
        )
    assert result.status == "coded" and result.reasks == 1
    assert json.loads(result.answer_json)["worries"]["value"] == ["health"]
    assert "'none' must be used alone" in fake_server.requests[1]["messages"][-1]["content"]


def test_codebook_from_a_qda_export(tmp_path):
    import yaml

    from qualcode import cli
    from qualcode.inputs import codebook

    export = tmp_path / "taguette_codebook.csv"
    rows = (
        "tag,description,number of highlights\n"
        'PPE shortage,"Masks, gowns rationed",4\nNight shift,,2\nfear,Fear of infection,9\n'
    )
    export.write_bytes(rows.encode("cp1252"))
    out = tmp_path / "codebook.yaml"
    cli.main(["codebook-from-csv", str(export), "--field", "themes", "--out", str(out)])
    cb = codebook.load(out)
    [field] = cb.fields
    assert field.name == "themes" and field.type == "multiple_choice"
    assert [(v.name, v.label, v.definition) for v in field.values] == [
        ("ppe_shortage", "PPE shortage", "Masks, gowns rationed"),
        ("night_shift", "Night shift", "Night shift"),  # no description: the label, to be written
        ("fear", None, "Fear of infection"),
    ]
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["name"] == "taguette_codebook"


def _result(chunk, answer: dict | None):
    import json

    from qualcode.records import ChunkResult

    return ChunkResult(
        chunk_id=chunk.chunk_id, doc_id=chunk.doc_id, status="coded" if answer else "failed",
        answer_json=json.dumps(answer) if answer else None, raw="{}", error=None if answer else "bad",
        request_hash="0" * 64, provider="openai", base_url="http://127.0.0.1/v1", model_asked="m", attempts=1,
        reasks=0, retries=0, cache_hit=False,
    )  # fmt: skip


def test_empty_answers_are_counted_in_the_tables_the_manifest_and_the_methods():
    import json

    from qualcode.outputs import provenance, results
    from qualcode.records import Chunk
    from qualcode.reporting import methods

    cb = _rules_codebook()
    texts = ["Rent is due and I worry.", "Nothing to add.", "My mother is ill."]
    chunks = [Chunk(f"c{i}", "survey.csv#1", i, 0, len(t), 6, (), t) for i, t in enumerate(texts)]
    answers = [json.loads(_answer(["money"], "][")), json.loads(_answer(["none"], "...")), None]
    built = results.coding_tables(cb, chunks, [_result(c, a) for c, a in zip(chunks, answers, strict=True)])
    codings = built["codings"].to_pandas()
    assert [list(x) if x is not None else None for x in codings.empty_fields] == [["summary"], ["summary"], None]
    assert results.codings_for_spreadsheets(built["codings"], cb).empty_fields.tolist()[:2] == ["summary", "summary"]
    tables = {name: t.to_pandas() for name, t in built.items()}
    tables["documents"] = tables["codings"][["doc_id"]].drop_duplicates()
    tables["chunks"] = tables["codings"][["chunk_id"]]
    counts = provenance.counts(tables)
    assert counts["answers_empty"] == {"summary": 2}
    text = methods.paragraph({"counts": counts}, cb.name, cb.version)
    assert (
        "2 answer(s) were empty (no value, or a text without a letter or digit), kept and counted by field: summary 2."
        in text
    )


# -- 7. excerpts to read ------------------------------------------------------------------------------------------


def test_excerpts_hold_each_passage_with_its_metadata_codes_quotes_and_grounding(tmp_path):
    import json

    import pandas as pd

    from qualcode.config import ChunkingConfig
    from qualcode.inputs import chunking
    from qualcode.outputs import results, tables

    cb = _rules_codebook()
    cfg = IngestConfig(table=ORAL_TABLE, speaker_aliases={"MR": "Maya Reyes"})
    docs = _read(tmp_path / "in", "archive.csv", oral_history_csv(), cfg)
    chunks = chunking.chunk_documents(docs, ChunkingConfig(max_tokens=40, overlap_tokens=5))
    answers = []
    for i, c in enumerate(chunks):  # a verbatim quote, an invented one, and an empty summary
        quote = c.text.split("\n")[0][:30] if i % 2 == 0 else "words nobody said"
        worries = {"worries": {"value": ["health", "money"], "quote": quote}}
        answers.append({**worries, "summary": {"value": "..." if i == 1 else "A passage."}})
    res = [_result(c, a) for c, a in zip(chunks, answers, strict=True)]
    work = tmp_path / "work"
    work.mkdir()
    tables.write(tables.documents_table(docs), work / "documents.parquet")
    tables.write(tables.chunks_table(chunks), work / "chunks.parquet")
    tables.write(tables.problems_table([]), work / "problems.parquet")
    tables.write(tables.results_table(res[::-1]), work / "shard.parquet")  # a shard holds them in any order
    out = {name: tmp_path / "out" / f"{name}.parquet" for name in tables.PUBLISHED}
    results.write_tables(
        codebook=cb, documents=work / "documents.parquet", chunks=work / "chunks.parquet",
        shard_files=[work / "shard.parquet"], ingest_failures=work / "problems.parquet", out=out,
        codings_csv=tmp_path / "out/codings.csv", excerpts_csv=tmp_path / "out/excerpts.csv",
    )  # fmt: skip
    ex = tables.read(out["excerpts"], "excerpts").to_pandas()
    assert list(ex.chunk_id) == [c.chunk_id for c in chunks]  # document order, then position
    assert list(ex.doc_id) == [c.doc_id for c in chunks] and list(ex.text) == [c.text for c in chunks]
    assert set(ex.meta_interview) == {"oh-07", "oh-12"}
    assert (ex.meta_interview == ex.doc_id.str.split("#").str[1]).all()
    first = ex.iloc[0]
    assert [(c["field"], c["value"]) for c in first.codes] == [
        ("worries", "health"),
        ("worries", "money"),
        ("summary", "A passage."),
    ]
    assert [c["grounding"] for c in first.codes] == ["exact", "exact", "not_asked"]
    assert first.codes[0]["quote"] == answers[0]["worries"]["quote"]
    assert {c["grounding"] for c in ex.iloc[1].codes if c["field"] == "worries"} == {"ungrounded"}
    assert (
        ex.iloc[0].codes_text.splitlines()[0] == f'worries: health, money | "{answers[0]["worries"]["quote"]}" (exact)'
    )
    assert "summary: (empty) ..." in ex.iloc[1].codes_text
    # the CSV a researcher opens in a spreadsheet: the same passages, the codes as text
    csv = pd.read_csv(tmp_path / "out/excerpts.csv", encoding="utf-8-sig", keep_default_na=False)
    assert list(csv.chunk_id) == list(ex.chunk_id) and list(csv.text) == list(ex.text)
    assert list(csv.codes_text) == list(ex.codes_text) and "codes" not in csv.columns
    assert csv.speakers.iloc[0] == "; ".join(ex.speakers.iloc[0])
    assert json.loads(json.dumps(list(csv.columns)))[:4] == ["doc_id", "chunk_index", "chunk_id", "status"]


# -- 4. context for the model --------------------------------------------------------------------------------------

# config/prompts/user.j2 before prompt_context existed: the default requests must stay byte for byte what it gave.
USER_TEMPLATE_BEFORE = '''Passage{% if speakers %} (speakers: {{ speakers | join(", ") }}){% endif %}:
"""
{{ text }}
"""
'''


def _requests(tmp_path, chunks, user="config/prompts/user.j2", **context):
    from qualcode import config
    from qualcode.coding import coder, prompts
    from qualcode.inputs import codebook

    cfg = config.load("config/config.yaml")
    cb = codebook.load("config/codebook.yaml")
    label = context.get("label_continued_turn", False)
    templates = prompts.load("config/prompts/system.j2", user, cb, cfg.llm.structured_output, label)
    return [coder.Requests(cfg.llm, templates)(c) for c in chunks]


def test_default_requests_are_unchanged_by_the_context_features(tmp_path):
    from qualcode.config import ChunkingConfig
    from qualcode.inputs import chunking

    docs = _read(tmp_path / "in", "archive.csv", oral_history_csv(), IngestConfig(table=ORAL_TABLE))
    chunks = chunking.chunk_documents(docs, ChunkingConfig(max_tokens=40, overlap_tokens=5))
    assert any(c.turn_speaker for c in chunks)  # some chunks start inside a turn: the feature would show
    before = tmp_path / "user_before.j2"
    before.write_text(USER_TEMPLATE_BEFORE, encoding="utf-8")
    now = [r.canonical() for r in _requests(tmp_path, chunks)]
    assert now == [r.canonical() for r in _requests(tmp_path, chunks, user=before)]


def test_chosen_metadata_reach_the_prompt(tmp_path):
    from researcher_data import SURVEY_QUESTION

    from qualcode.config import ChunkingConfig
    from qualcode.errors import ConfigError
    from qualcode.inputs import chunking

    cfg = IngestConfig(table=TableInput(id_column="respondent", text_column="answer"))
    docs = _read(tmp_path, "survey.csv", survey_cp1252_csv(), cfg)
    chunks = chunking.chunk_documents(docs, ChunkingConfig(), ["question"])
    assert chunks[0].context == {"question": SURVEY_QUESTION}
    [request] = _requests(tmp_path, chunks[:1])
    user = request.messages[-1]["content"]
    assert user.startswith(f"About this text:\n- question: {SURVEY_QUESTION}\n\nPassage:\n")
    assert "site" not in user  # only the metadata chosen
    with pytest.raises(ConfigError, match="prompt_context.metadata: no document has metadata 'setting'"):
        chunking.chunk_documents(docs, ChunkingConfig(), ["setting"])


def test_a_chunk_starting_mid_turn_carries_its_speaker_label(tmp_path):
    from qualcode.config import ChunkingConfig
    from qualcode.inputs import chunking
    from qualcode.outputs import tables

    cfg = IngestConfig(table=ORAL_TABLE, speaker_aliases={"AK": "Amira Khalil", "MR": "Maya Reyes"})
    docs = _read(tmp_path, "archive.csv", oral_history_csv(), cfg)
    chunks = chunking.chunk_documents(docs, ChunkingConfig(max_tokens=30, overlap_tokens=5))
    inside = [c for c in chunks if c.turn_speaker]
    assert inside, "no chunk starts inside a turn: make the chunks smaller"
    for c in chunks:  # the speaker whose turn holds the chunk's first character, unless the chunk starts at its label
        doc = next(d for d in docs if d.doc_id == c.doc_id)
        holding = [t for t in doc.turns if t.start < c.start < t.end]
        assert c.turn_speaker == (holding[0].speaker if holding else None)
    mid = inside[0]
    [labelled] = _requests(tmp_path, [mid], label_continued_turn=True)
    assert f'"""\n{mid.turn_speaker}: {mid.text}\n"""' in labelled.messages[-1]["content"]
    [plain] = _requests(tmp_path, [mid])
    assert f'"""\n{mid.text}\n"""' in plain.messages[-1]["content"]
    # the chunks table keeps both, for the coding jobs and the replay archive
    assert tables.chunks_from(tables.chunks_table(chunks)) == chunks


# -- 9. data safety ----------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_inputs_inside_a_checkout_are_kept_out_of_git(tmp_path):
    from qualcode.outputs import provenance

    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    inputs = _inputs(repo, {"survey.csv": survey_cp1252_csv()})  # project/inputs/survey.csv
    assert "inputs/survey.csv" in _git(repo, "status", "--porcelain", "--untracked-files=all")  # would be committed
    done = provenance.keep_out_of_git(inputs)
    assert done and "wrote" in done and str(inputs) in done
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""  # git sees nothing to commit
    assert [p.name for p in ingest.discover(inputs, IngestConfig().include)] == ["survey.csv"]  # .gitignore not read
    assert provenance.keep_out_of_git(inputs) is None  # once


def test_inputs_outside_a_checkout_or_already_ignored_are_left_alone(tmp_path):
    from qualcode.outputs import provenance

    outside = _inputs(tmp_path / "elsewhere", {"a.txt": b"R: words"})
    assert provenance.keep_out_of_git(outside) is None and not (outside / ".gitignore").exists()
    # in this repository, data/ is ignored by its .gitignore and data/raw holds the tracked example corpus
    assert provenance.keep_out_of_git("data/raw") is None and not Path("data/raw/.gitignore").exists()
    assert _git(Path("."), "check-ignore", "data/raw/participant_07.txt").strip() == "data/raw/participant_07.txt"
