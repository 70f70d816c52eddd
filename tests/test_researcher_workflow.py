"""The researcher's workflow (issue 13) through the real Snakemake workflow, against the fake server."""

from __future__ import annotations

from pathlib import Path

import pytest
from researcher_data import survey_cp1252_csv

from workflow_helpers import fake_config, run, scratch_copy

pytestmark = pytest.mark.e2e

KEY_ENV = {"QUALCODE_TEST_KEY": "test-key-for-the-fake-server"}


def _workdir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    workdir = scratch_copy(tmp_path / "wf", data=False)
    for name, content in files.items():
        path = tmp_path / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return workdir


def test_run_with_nothing_to_code_fails_with_the_reason(tmp_path, fake_server):
    workdir = _workdir(tmp_path, {"survey.csv": survey_cp1252_csv()})
    cfg = fake_config(
        workdir, fake_server, ingest={"input_dir": str(tmp_path / "inputs"), "table": {"text_column": "response"}}
    )
    proc = run(workdir, "--configfile", str(cfg), env=KEY_ENV, check=False)
    assert proc.returncode != 0
    assert "no documents to code" in proc.stderr and "no text column 'response'" in proc.stderr
    assert fake_server.count() == 0  # nothing was sent
    assert not (workdir / "results/methods.md").exists()


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("llm:\n  temprature: 0.2\n", ("line 2: llm.temprature: unknown setting; did you mean `temperature`?",)),
        ("llm:\n  model: gpt-4o-mini\n", ("'gpt-4o-mini' is not a .gguf file", "llm.provider: openai")),
    ],
    ids=["misspelt-key", "api-model-with-local-provider"],
)
def test_bad_setting_stops_before_any_job_naming_file_and_line(tmp_path, override, fragments):
    workdir = _workdir(tmp_path, {"survey.csv": survey_cp1252_csv()})
    mine = workdir / "my-config.yaml"
    mine.write_text(override + f"ingest:\n  input_dir: {tmp_path / 'inputs'}\n")
    proc = run(workdir, "--configfile", "my-config.yaml", check=False)
    assert proc.returncode != 0
    assert not (workdir / "results").exists()
    for fragment in fragments:
        assert fragment in proc.stderr
    assert "my-config.yaml" in proc.stderr
