"""Reruns and the replay archive: the archive holds every answer a table is built from (replicates and arms too), so
a replay sends nothing; deleting a document reruns only the coding jobs whose shard it was in; and the SLURM tests
run only on the cluster .ci/slurm.sh started."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_slurm import foreign_cluster

from workflow_helpers import fake_config, run, scratch_copy, write_config

ARCHIVE = "results/replay/answers.jsonl.gz"
ENV = {"QUALCODE_TEST_KEY": "sk-test-reruns"}


def _scontrol(slurm_dir: Path) -> str:
    """What `scontrol show config` prints, in part, for the controller .ci/slurm.sh starts in `slurm_dir`."""
    return (
        "Configuration data as of 2026-12-06T19:00:00\n"
        "ClusterName             = qualcode-ci\n"
        f"JobCompLoc              = {slurm_dir}/log/jobcomp.log\n"
        "JobCompType             = jobcomp/filetxt\n"
        f"SlurmctldPidFile        = {slurm_dir}/slurmctld.pid\n"
    )


def _state(tmp_path: Path, pid: int) -> Path:
    """A state folder as .ci/slurm.sh leaves it, its controller's pid file naming `pid`."""
    slurm_dir = tmp_path / "qualcode-slurm"
    (slurm_dir / "log").mkdir(parents=True)
    (slurm_dir / "slurmctld.pid").write_text(f"{pid}\n")
    return slurm_dir


def test_the_slurm_tests_run_on_the_cluster_slurm_sh_started(tmp_path):
    slurm_dir = _state(tmp_path, os.getpid())  # a process that is running
    assert foreign_cluster(slurm_dir, _scontrol(slurm_dir)) is None


def test_the_slurm_tests_leave_another_cluster_alone(tmp_path):
    """A site's own SLURM answers: its job-completion log is elsewhere (or it keeps none); the tests must skip, naming
    the log they expected, not fail on a FileNotFoundError for it."""
    ours = _state(tmp_path, os.getpid())
    site = _scontrol(Path("/var/spool/slurm")).replace("jobcomp/filetxt", "jobcomp/none")
    why = foreign_cluster(ours, site)
    assert why and "not started by .ci/slurm.sh" in why and str(ours / "log" / "jobcomp.log") in why
    kept_none = "\n".join(line for line in site.splitlines() if not line.startswith("JobCompLoc"))
    assert "not set" in foreign_cluster(ours, kept_none)
    # a state folder that does not exist (the default /tmp/qualcode-slurm, never started here)
    assert foreign_cluster(tmp_path / "never-started", site)


def test_a_stale_state_folder_is_not_taken_for_a_running_cluster(tmp_path):
    """The settings match, but the pid file names no running process: not the controller .ci/slurm.sh started."""
    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that has just ended
    slurm_dir = _state(tmp_path, proc.pid)
    why = foreign_cluster(slurm_dir, _scontrol(slurm_dir))
    assert why and str(slurm_dir / "slurmctld.pid") in why and "no process running" in why


@pytest.mark.e2e
def test_a_replay_of_a_run_with_replicates_and_an_arm_sends_nothing(tmp_path, fake_server):
    """Two replicates and an arm with another model, server and system prompt: the archive holds every request each
    coding job sent, and the same run rebuilt from it, in an empty cache, sends none."""
    from conftest import _quote_the_passage
    from fakeserver import FakeServer

    wd = scratch_copy(tmp_path / "wf", data=False)
    (wd / "data/raw").mkdir(parents=True)
    texts = ["R: We reused masks all week and I was scared.", "R: My colleague covered my shift.", "R: The bus at 5."]
    for i, text in enumerate(texts):
        (wd / f"data/raw/note{i}.txt").write_text(text)
    terse = wd / "config/prompts/system_terse.j2"
    terse.write_text((wd / "config/prompts/system.j2").read_text() + "\nBe terse.\n")
    with FakeServer(seed=2) as other:
        other.answer_fn = _quote_the_passage
        arm = {"llm": {"model": "fake-model-b", "base_url": other.base_url}, "prompts": {"system": str(terse)}}
        overrides = yaml.safe_load(fake_config(wd, fake_server).read_text())

        def config(cache: Path) -> str:
            validation = {"replicates": 2, "arms": {"terse": arm}, "bootstrap": 20}
            return str(write_config(wd, {**overrides, "cache_dir": str(cache), "validation": validation}))

        targets = (ARCHIVE, "results/stability.parquet")  # the archive and what replicates and arms go into
        run(wd, *targets, "--configfile", config(tmp_path / "cache"), env=ENV)
        sent = fake_server.count() + other.count()
        assert (fake_server.count(), other.count()) == (2 * len(texts), 2 * len(texts))  # 2 replicates of each
        with gzip.open(wd / ARCHIVE, "rt") as fh:
            archived = [json.loads(line) for line in fh]
        assert len(archived) == sent  # every request sent, replicates and the arm's included
        assert {e["request"]["base_url"] for e in archived} == {fake_server.base_url, other.base_url}
        first = (wd / ARCHIVE).read_bytes()

        shutil.move(wd / ARCHIVE, tmp_path / "answers.jsonl.gz")
        shutil.rmtree(wd / "results")
        imp = subprocess.run(
            [sys.executable, "-m", "qualcode", "import-archive", str(tmp_path / "answers.jsonl.gz"),
             "--cache-dir", str(tmp_path / "empty-cache")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert imp.returncode == 0, imp.stderr
        run(wd, *targets, "--configfile", config(tmp_path / "empty-cache"), env=ENV)
        assert fake_server.count() + other.count() == sent  # the replay sent nothing
        assert (wd / ARCHIVE).read_bytes() == first
