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
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_slurm import foreign_cluster

from qualcode import shards

from workflow_helpers import CODING, fake_config, naming_keys, request_key, run, scratch_copy, tables, write_config

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
    # the notes share words (my shift), so they form themes the model names
    texts = ["R: We reused masks on my shift and I was scared.", "R: My colleague covered my shift.",
             "R: The bus at 5 after my shift."]  # fmt: skip
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
        named = naming_keys(wd)  # the themes' names (themes.names) are asked of the main model only
        coding = [b for b in fake_server.requests if request_key(b, fake_server.base_url) not in named]
        n_themes = len(pd.read_parquet(wd / "results/themes.parquet"))
        assert len(named) == n_themes > 0
        assert (len(coding), other.count()) == (2 * len(texts), 2 * len(texts))  # 2 replicates of each
        with gzip.open(wd / ARCHIVE, "rt") as fh:
            archived = [json.loads(line) for line in fh]
        # every coding request sent, replicates and the arm's included, and each naming question answered
        assert len(archived) == len(coding) + other.count() + len(named)
        assert named <= {e["request_hash"] for e in archived}
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


def test_a_plan_keeps_its_number_of_shards_until_the_corpus_grows_or_shrinks_a_lot(tmp_path):
    ids = [f"{i:016x}" for i in range(32)]  # the example's 32 chunks: a boundary of `auto`
    path = tmp_path / "shards.json"
    first = shards.plan(ids, "auto")
    shards.write(first, path, "auto", shards.number_of_shards("auto", len(ids)))
    previous = shards.previous_buckets(path, "auto")
    assert previous == 4 and shards.number_of_shards("auto", 31) == 2  # planned anew, 31 chunks would get 2
    # one chunk fewer: every shard but the one that held it keeps its chunks, and so its name
    after = shards.plan(ids[1:], "auto", previous)
    assert len({s.name for s in after} - {s.name for s in first}) == 1
    assert shards.number_of_shards("auto", 16, previous) == 4 and shards.number_of_shards("auto", 15, previous) == 1
    assert shards.number_of_shards("auto", 127, previous) == 4 and shards.number_of_shards("auto", 128, previous) == 16
    # another setting plans anew, and so does a missing or unreadable plan
    assert shards.previous_buckets(path, 8) is None
    path.write_text("not json")
    assert shards.previous_buckets(path, "auto") is None and shards.previous_buckets(tmp_path / "none", "auto") is None


@pytest.mark.e2e
def test_deleting_a_document_reruns_only_the_shard_that_held_it(tmp_path, fake_server):
    """Six one-chunk documents in shards of about one chunk: 8 shards, where 5 documents would be planned in 4 afresh.
    After one is deleted, only the shard that held it runs again (it holds another document), from the cache."""
    wd = scratch_copy(tmp_path / "wf", data=False)
    raw = wd / "data" / "raw"
    raw.mkdir(parents=True)
    words = "masks shifts bus night patients fear proud tired gloves union neighbours rent".split()
    for i in range(6):
        (raw / f"answer_{i}.txt").write_text(f"R{i}: " + " ".join(words[i:] + words[:i]))
    cfg = fake_config(wd, fake_server, coding={"shard_size": 1})
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    docs = list(tables(wd)["chunks"].doc_id)  # by row of the chunks table, as the plan names chunks
    before = shards.read(wd / "results/work/shards.json")
    assert len(before) >= 4 and shards.number_of_shards(1, 5) == 4  # deleting one crosses a boundary
    docs_of = {s.name: {docs[r] for r in s.rows} for s in before}
    shared = [s for s in before if len(docs_of[s.name]) > 1]
    assert shared  # a shard of two documents: deleting one of them must rerun it, and nothing else
    held, gone = shared[0], sorted(docs_of[shared[0].name])[0]
    shard_dir = wd / "results/work/shards"
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
    sent = fake_server.count()
    time.sleep(1.1)  # mtimes of a rerun must differ from the first run's at coarse file-system resolution

    (raw / gone).unlink()
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    after = shards.read(wd / "results/work/shards.json")
    assert {s.name for s in before} - {s.name for s in after} == {held.name}  # only its shard changed ...
    t = tables(wd)
    rerun = [s for s in after if f"{s.name}.parquet" not in mtimes]  # ... and only it ran again: its rest
    assert len(rerun) == 1 and {t["chunks"].doc_id.iloc[r] for r in rerun[0].rows} == docs_of[held.name] - {gone}
    kept = [s.name for s in after if s is not rerun[0]]
    assert all((shard_dir / f"{n}.parquet").stat().st_mtime_ns == mtimes[f"{n}.parquet"] for n in kept)
    assert fake_server.count() == sent  # and nothing was sent
    assert gone not in set(t["documents"].doc_id) and (t["codings"].status == "coded").all()
    # the plan kept by update() is not a reason to run the chunking again
    assert "Nothing to be done" in run(wd, CODING, "-n", "--configfile", str(cfg), env=ENV).stdout
