"""The researcher's workflow (issue 13), tested on inputs shaped like real exports (tests/researcher_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from researcher_data import oral_history_csv, survey_cp1252_csv

from qualcode import ingest
from qualcode.config import IngestConfig, TableInput
from qualcode.errors import NothingToCode


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
