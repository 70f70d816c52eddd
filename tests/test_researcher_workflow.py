"""The researcher's workflow (issue 13) through the real Snakemake workflow, against the fake server."""

from __future__ import annotations

from pathlib import Path

import pytest
from researcher_data import survey_cp1252_csv

from workflow_helpers import fake_config, naming_keys, run, scratch_copy

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


def test_pilot_codes_a_reproducible_sample_and_the_full_run_reuses_its_answers(tmp_path, fake_server):
    import subprocess
    import sys

    import yaml
    from researcher_data import SURVEY_ANSWERS

    from workflow_helpers import CODING, tables

    workdir = _workdir(tmp_path, {"survey.csv": survey_cp1252_csv()})
    readable = [f"survey.csv#P{i:02d}" for i, a in enumerate(SURVEY_ANSWERS, start=1) if a]
    table = {"id_column": "respondent", "text_column": "answer"}
    full = fake_config(workdir, fake_server, ingest={"input_dir": str(tmp_path / "inputs"), "table": table})
    pilot = workdir / "pilot.yaml"
    pilot.write_text(yaml.safe_dump({"pilot": {"documents": 3, "seed": 7}}))

    run(workdir, "--configfile", str(full), str(pilot), env=KEY_ENV)
    first = tables(workdir)
    sampled = list(first["documents"].doc_id)
    assert len(sampled) == 3 and set(sampled) <= set(readable)
    assert sampled == [d for d in readable if d in sampled]  # in the file's order
    # a request per chunk, and one per theme (themes.names)
    assert fake_server.count() == len(first["chunks"]) + len(naming_keys(workdir)) and naming_keys(workdir)
    assert "This was a pilot run: 3 documents sampled reproducibly" in (workdir / "results/methods.md").read_text()

    # the estimate says what the full run will add after the pilot
    cmd = [sys.executable, "-m", "qualcode", "estimate", "--config", "config/config.yaml", "--config", str(full)]
    estimate = subprocess.run([*cmd, "--config", str(pilot)], cwd=workdir, capture_output=True, text=True, check=True)
    assert f"3 of {len(readable)}, sampled by pilot (seed 7" in estimate.stdout
    [adds] = [line for line in estimate.stdout.splitlines() if line.startswith("the full run then adds")]
    assert f" {len(readable) - 3} documents, {len(readable) - 3} requests" in adds, estimate.stdout

    # the same seed samples the same documents; the full run sends only what the pilot did not
    again = workdir / "again.yaml"
    again.write_text(yaml.safe_dump({**yaml.safe_load(full.read_text()), "results_dir": "results_again"}))
    run(workdir, CODING, "--configfile", str(again), str(pilot), env=KEY_ENV)
    assert list(tables(workdir, "results_again")["documents"].doc_id) == sampled
    sent = fake_server.count()
    run(workdir, CODING, "--configfile", str(full), env=KEY_ENV)
    second = tables(workdir)
    assert list(second["documents"].doc_id) == readable
    calls = second["llm_calls"].set_index("chunk_id")
    assert calls.loc[list(first["chunks"].chunk_id)].cache_hit.all()
    assert fake_server.count() - sent == (~calls.cache_hit).sum() == len(second["chunks"]) - len(first["chunks"])
