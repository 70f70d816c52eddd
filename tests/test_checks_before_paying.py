"""Everything that can stop a run is found before the first request, by `qualcode check` and when the workflow is
parsed: human codings that name none of the documents, a wrong text column, a broken human codings file. The
example's human codings do not follow a researcher into their own data; the run's results and cache are never
inputs; documentation-like files are named; and `snakemake --report` describes the run from its own manifest.

One small own-data run (two documents, the fake server, the default config otherwise) serves the e2e tests.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import pytest
import yaml

from qualcode import cli, config
from qualcode.errors import QualcodeError

from fakeserver import FakeServer
from workflow_helpers import REPO, run, scratch_copy, write_config

KEY_ENV = "QUALCODE_TEST_KEY"
ENV = {KEY_ENV: "sk-test-FAKE-key-0123456789abcdef"}
EXAMPLE = REPO / "config" / "config.yaml"
EXAMPLE_GOLD = yaml.safe_load(EXAMPLE.read_text())["validation"]["gold"]
TEXTS = {
    "ward_night.txt": "Interviewer: How was the night?\n\nNURSE: Long. Three admissions and no masks left by two.",
    "bus_route.txt": "Interviewer: And the buses?\n\nDRIVER: Empty at first, then packed. Nobody wore a mask.",
}


def _folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def _own_config(path: Path, input_dir: Path, **more) -> Path:
    """A researcher's own config: their folder, everything else from config/config.yaml (the codebook and
    templates the example uses; the model the test needs)."""
    path.write_text(yaml.safe_dump({"ingest": {"input_dir": str(input_dir)}, **more}))
    return path


def _check(*files: Path) -> str:
    """`qualcode check` with the repository's config first, as the README writes it."""
    return cli.check([str(EXAMPLE), *map(str, files)])


# ---------------------------------------------------------------------------------------------------------------
# The example's human codings and a researcher's own folder


def test_the_examples_human_codings_do_not_follow_a_researchers_own_folder(tmp_path, caplog):
    own = _own_config(tmp_path / "mine.yaml", _folder(tmp_path / "study", TEXTS))
    with caplog.at_level(logging.WARNING):
        cfg = config.load(EXAMPLE, own)
    assert cfg.validation.gold == []
    (note,) = [r.getMessage() for r in caplog.records if "validation.gold" in r.getMessage()]
    assert str(own) in note and "left out" in note and "set validation.gold in" in note
    assert all(path in note for path in EXAMPLE_GOLD)
    # the example itself keeps its codings, and so does a config that names them (or others) on purpose
    assert config.load(EXAMPLE).validation.gold == EXAMPLE_GOLD
    named = _own_config(tmp_path / "named.yaml", tmp_path / "study", validation={"gold": ["mine.csv"]})
    assert config.load(EXAMPLE, named).validation.gold == ["mine.csv"]


def test_check_stops_on_human_codings_that_name_none_of_the_documents(tmp_path):
    study = _folder(tmp_path / "study", TEXTS)
    # the example's codings named on purpose for another folder: the run would send every request, then stop
    own = _own_config(tmp_path / "mine.yaml", study, validation={"gold": [str(REPO / p) for p in EXAMPLE_GOLD]})
    with pytest.raises(QualcodeError) as err:
        _check(own)
    message = str(err.value)
    assert "coder_a.csv" in message and "none of the documents it codes" in message
    assert str(study) in message and "validation.gold" in message and "remove validation.gold" in message


# ---------------------------------------------------------------------------------------------------------------
# `qualcode check` runs what the first stages run


def test_check_reads_the_inputs_as_the_ingest_job_does(tmp_path):
    study = _folder(tmp_path / "study", {"survey.csv": "id,response\nR1,We shared one mask a day.\n"})
    with pytest.raises(QualcodeError) as err:
        _check(_own_config(tmp_path / "mine.yaml", study))
    assert "survey.csv" in str(err.value) and "ingest.table.text_column" in str(err.value)
    assert "no text column 'text' (columns: id, response)" in str(err.value)
    fixed = _own_config(tmp_path / "fixed.yaml", study, ingest={"input_dir": str(study), "table": {
        "text_column": "response"}})  # fmt: skip
    assert "1 input files in" in _check(fixed) and ": 1 documents" in _check(fixed)
    # beside readable files the run skips the table and goes on: the check says so rather than a bare "ok"
    _folder(study, TEXTS)
    said = _check(_own_config(tmp_path / "mixed.yaml", study))
    assert "3 input files in" in said and ": 2 documents, 1 unreadable file(s)" in said


@pytest.mark.parametrize(
    "rows, problem",
    [
        ("document,field,value\nward_night.txt,emotions,fear\n", "no doc_id column"),
        ("coder,doc_id,field,value\nann,ward_night.txt,emotions,no-such-value\n", "row 2: value 'no-such-value'"),
        ("coder,doc_id,field,value\nmodel,ward_night.txt,,\n", "coder name(s) model are reserved"),
    ],
    ids=["no-doc-id", "value-not-in-codebook", "reserved-coder"],
)
def test_check_reads_the_human_codings_as_the_validate_job_does(tmp_path, rows, problem):
    study = _folder(tmp_path / "study", TEXTS)
    (tmp_path / "gold.csv").write_text(rows, encoding="utf-8")
    own = _own_config(tmp_path / "mine.yaml", study, validation={"gold": [str(tmp_path / "gold.csv")]})
    with pytest.raises(QualcodeError) as err:
        _check(own)
    assert problem in str(err.value) and "validation" in str(err.value)
    assert "gold.csv" in str(err.value) or "validation.gold" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# Paths: results and cache are never inputs; documentation-like files are named


def test_results_and_cache_are_never_inputs(tmp_path):
    project = tmp_path / "project"
    _folder(project / "data", TEXTS)
    _folder(project / "results", {"codings.csv": "chunk_id,text\nc1,the last run's codings\n"})
    _folder(project / "cache", {"notes.txt": "not a participant's text"})
    own = _own_config(
        tmp_path / "mine.yaml", project, results_dir=str(project / "results"), cache_dir=str(project / "cache")
    )
    assert f"2 input files in {project}" in _check(own)


def test_files_that_look_like_documentation_are_named_with_how_to_leave_them_out(tmp_path, caplog):
    study = _folder(tmp_path / "study", {**TEXTS, "README.md": "# About", "notes/SOURCES.md": "Archive X"})
    with caplog.at_level(logging.WARNING):
        assert "4 input files" in _check(_own_config(tmp_path / "mine.yaml", study))
    (note,) = [r.getMessage() for r in caplog.records if "documentation" in r.getMessage()]
    assert "README.md, notes/SOURCES.md" in note and "ingest.exclude" in note
    left_out = _own_config(
        tmp_path / "left.yaml", study, ingest={"input_dir": str(study), "exclude": ["README*", "SOURCES*"]}
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert "2 input files" in _check(left_out)
    assert not [r for r in caplog.records if "documentation" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------------
# Through the real workflow: one own-data run, its report, and a run stopped at parse


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """The example's workflow and config, a researcher's folder of two documents and the fake server: run to the
    manifest and the report's figures."""
    tmp = tmp_path_factory.mktemp("own")
    work = scratch_copy(tmp / "work")
    study = _folder(tmp / "study", TEXTS)
    with FakeServer(seed=1) as server:
        own = write_config(work, {
            "ingest": {"input_dir": str(study)},
            "llm": {"provider": "openai", "base_url": server.base_url, "model": "fake-model",
                    "structured_output": "json_schema", "api_key_env": KEY_ENV},
            "cache_dir": str(tmp / "cache"),
        })  # fmt: skip
        # every figure `--report` collects: the coding's, the methods page and the themes'
        targets = ["results/manifest.json", "results/report/code_frequencies.png", "results/report/methods.html"]
        targets.append("results/report/themes_map.png")
        proc = run(work, *targets, "--configfile", str(own), env=ENV)
        sent = server.count()
        # the example's codings named on purpose: the run stops when parsed, before any request
        server_before = server.count()
        stopped_cfg = write_config(work, {
            "ingest": {"input_dir": str(study)},
            "validation": {"gold": EXAMPLE_GOLD},
            "llm": {"provider": "openai", "base_url": server.base_url, "model": "fake-model",
                    "structured_output": "json_schema", "api_key_env": KEY_ENV},
            "cache_dir": str(tmp / "cache2"),
        })  # fmt: skip
        stopped = run(work, "tables", "--configfile", str(stopped_cfg), env=ENV, check=False)
        stopped_requests = server.count() - server_before
    return {"work": work, "study": study, "proc": proc, "sent": sent, "stopped": stopped,
            "stopped_requests": stopped_requests}  # fmt: skip


@pytest.mark.e2e
def test_an_own_data_run_with_the_default_config_codes_and_says_the_examples_codings_are_left_out(own_run):
    assert own_run["sent"] >= len(TEXTS)
    assert "validation.gold" in own_run["proc"].stderr and "left out" in own_run["proc"].stderr
    stopped = own_run["stopped"]
    assert stopped.returncode != 0 and own_run["stopped_requests"] == 0
    said = stopped.stdout + stopped.stderr
    assert "coder_a.csv" in said and "none of the documents it codes" in said and "validation.gold" in said


@pytest.mark.e2e
def test_the_report_describes_the_run_from_its_manifest_not_the_config_it_is_given(own_run):
    work = own_run["work"]
    # as the README writes it: no --configfile (the default config names the demo model and data/raw)
    proc = run(work, "--report", "report.zip", env=ENV, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(work / "report.zip") as z:
        text = z.read("report/report.html").decode("utf-8")
    # the front page's first sentence: the folder, the model and the codebook the run used
    said = re.search(r"qualcode coded the texts in (.*?)It read", text, re.DOTALL).group(1)
    assert str(own_run["study"]) in said and "fake-model" in said
    assert "data/raw" not in said and "smollm2" not in said
    # nor do the captions warn that the codes come from the embedded demo model
    assert "demo model" not in text


def test_the_workflows_parse_stops_on_human_codings_that_do_not_fit_the_codebook(tmp_path):
    """The parse-time half (what common.smk runs) catches, before any document is read, a value the codebook does
    not have and a document no listed file holds, naming the file, the row and the setting."""
    from qualcode import preflight
    from qualcode.inputs import codebook

    study = _folder(tmp_path / "study", TEXTS)
    gold = tmp_path / "gold.csv"
    gold.write_text("coder,doc_id,field,value\nann,ward_night.txt,emotions,no-such-value\n", encoding="utf-8")
    cfg = config.load(EXAMPLE, _own_config(tmp_path / "mine.yaml", study, validation={"gold": [str(gold)]}))
    cb = codebook.load(REPO / cfg.codebook)
    with pytest.raises(QualcodeError, match=r"gold\.csv, row 2: value 'no-such-value' is not allowed .*validation\."):
        preflight.before_reading(cfg, cb)
    gold.write_text("coder,doc_id,field,value\nann,ward_night.txt,,\nann,elsewhere.txt,,\n", encoding="utf-8")
    with pytest.raises(QualcodeError, match=r"row 3: unknown document 'elsewhere.txt' \(not among the files listed"):
        preflight.before_reading(cfg, cb)
