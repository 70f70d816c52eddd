"""The workflow on a real SLURM scheduler (a single-node cluster started by .ci/slurm.sh): through the executor plugin
with the shipped profile, inside one allocation, and with a model server of its own in the allocation.

These need root and the Debian packages slurmctld, slurmd, slurm-client and munge. Where they are missing, or where
a SLURM other than the one .ci/slurm.sh starts is answering (a site's own: the tests read their cluster's
job-completion log and never submit to anyone else's), the tests skip with the reason, unless
QUALCODE_REQUIRE_SLURM=1 (CI sets it): then they fail, so CI cannot pass without running them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qualcode.coding.client import SMOLLM2, local_model_path

from workflow_helpers import (
    CODING,
    REPO,
    SNAKEMAKE,
    assert_invariants,
    fake_config,
    naming_keys,
    run,
    scratch_copy,
    tables,
    write_config,
)

pytestmark = pytest.mark.e2e

ENV = {"QUALCODE_TEST_KEY": "sk-test-slurm-fake"}
SLURM_DIR = Path(os.environ.get("QUALCODE_SLURM_DIR", "/tmp/qualcode-slurm"))
CODING_TABLES = ("codings", "codes")


def foreign_cluster(slurm_dir: Path, config: str) -> str | None:
    """Why the SLURM that answers here is not the one `.ci/slurm.sh` started with its state in `slurm_dir`, or None
    when it is. `config` is what `scontrol show config` prints: the answering controller's own settings. These tests
    read that cluster's job-completion log and must never submit jobs to a cluster of someone else's."""
    settings = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", config, flags=re.MULTILINE))
    jobcomp, pid_file = slurm_dir / "log" / "jobcomp.log", slurm_dir / "slurmctld.pid"
    if Path(settings.get("JobCompLoc", "")) != jobcomp or Path(settings.get("SlurmctldPidFile", "")) != pid_file:
        return (
            f"a SLURM cluster not started by .ci/slurm.sh answers here (its job-completion log is "
            f"{settings.get('JobCompLoc') or 'not set'}, not {jobcomp}); these tests run only on their own: stop that "
            "one, or point QUALCODE_SLURM_DIR at the state folder .ci/slurm.sh used"
        )
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return (
            f"{pid_file} names no process running here, so the slurmctld that answers is not the one .ci/slurm.sh "
            "started on this machine; stop it, or start ours with `sudo .ci/slurm.sh start`"
        )
    return None


def _cannot_run(why: str) -> None:
    if os.environ.get("QUALCODE_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM tests required (QUALCODE_REQUIRE_SLURM=1) but cannot run: {why}")
    pytest.skip(f"single-node SLURM: {why}")


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM of .ci/slurm.sh: the one already up, or one this module starts and stops."""
    tools = {
        t: shutil.which(t, path="/usr/sbin:/usr/bin") for t in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol")
    }
    missing = [t for t, found in tools.items() if not found]
    why = f"missing {missing}" if missing else ("needs root" if os.geteuid() != 0 else None)
    if why:
        _cannot_run(why)
    answering = subprocess.run([tools["scontrol"], "show", "config"], capture_output=True, text=True, timeout=120)
    was_up = answering.returncode == 0
    if was_up and (why := foreign_cluster(SLURM_DIR, answering.stdout)):
        _cannot_run(why)
    script = REPO / ".ci" / "slurm.sh"
    if not was_up:
        subprocess.run([str(script), "start"], check=True, timeout=120)
    yield SLURM_DIR
    if not was_up:
        subprocess.run([str(script), "stop"], check=True, timeout=60)


def _profile(wd: Path) -> None:
    """What a user edits in the shipped profile: the partition."""
    prof = wd / "workflow/profiles/slurm/config.yaml"
    text = prof.read_text()
    assert 'slurm_partition: "EDIT-ME"' in text
    prof.write_text(text.replace('slurm_partition: "EDIT-ME"', 'slurm_partition: "debug"'))


def _executor_run(wd: Path, cfg: Path, *args: str, targets: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    # the test cluster keeps no accounting database: job states come from squeue (the profile's note says so)
    return run(
        wd,
        *targets,
        "--workflow-profile", "workflow/profiles/slurm", "--configfile", str(cfg),
        "--slurm-status-command", "squeue", *args, env=ENV,
    )  # fmt: skip


def _recorded_jobs(slurm_dir: Path) -> dict[str, str]:
    """Job id -> state, from the controller's record of finished jobs."""
    text = (slurm_dir / "log" / "jobcomp.log").read_text()
    return {m[1]: m[2] for m in re.finditer(r"JobId=(\d+) .*?JobState=(\S+)", text)}


def _shard_meta(wd: Path) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in (pq.read_schema(p).metadata or {}).items()}
        for p in sorted((wd / "results/work/shards").glob("*.parquet"))
    ]


def _job_env(extra: dict[str, str]) -> dict[str, str]:
    """sbatch copies this environment into the job: this interpreter's snakemake and python first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, **extra}


def _submissions(proc: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def server():
    """One fake server for the module: its URL is part of every request and of the tables' config hash, so runs
    compared byte for byte must talk to the same one."""
    from conftest import _quote_the_passage
    from fakeserver import FakeServer

    with FakeServer(seed=1) as fake:
        fake.answer_fn = _quote_the_passage
        yield fake


@pytest.fixture(scope="module")
def laptop_run(tmp_path_factory, server):
    """The example run on one machine, no scheduler: the tables every cluster run must reproduce byte for byte."""
    wd = scratch_copy(tmp_path_factory.mktemp("laptop") / "wf")
    run(wd, CODING, "--configfile", str(fake_config(wd, server)), env=ENV)
    return wd


def _same_coding_tables(a: Path, b: Path) -> None:
    for name in CODING_TABLES:
        assert (a / f"results/{name}.parquet").read_bytes() == (b / f"results/{name}.parquet").read_bytes(), name


def test_the_example_through_the_slurm_executor(tmp_path, slurm, server, laptop_run):
    """The shipped profile, a server on the node (so coding runs on compute nodes and never opens the cache): every
    output, jobs in the scheduler's records, the coding tables of a laptop run, and a rerun that sends nothing."""
    wd = scratch_copy(tmp_path / "wf")
    _profile(wd)
    cfg = fake_config(wd, server)
    before = server.count()
    proc = _executor_run(wd, cfg)
    submitted = _submissions(proc)
    assert submitted, "no job went through sbatch"
    recorded = _recorded_jobs(slurm)
    assert all(recorded.get(j) == "COMPLETED" for j in submitted), (submitted, recorded)

    t = tables(wd)
    assert_invariants(t)
    assert (t["codings"].status == "coded").all()
    assert server.count() - before == len(t["chunks"]) + len(naming_keys(wd))  # a request per chunk, one per theme
    _same_coding_tables(wd, laptop_run)
    # every coding job ran as a SLURM job that submission made, and the manifest says where
    meta = _shard_meta(wd)
    assert meta and all(m["qualcode.job_slurm_id"] in submitted for m in meta)
    manifest = json.loads((wd / "results/manifest.json").read_text())
    assert manifest["execution"]["executor"] == "slurm" and manifest["execution"]["coding"] == "compute"
    assert {j["slurm_job_id"] for j in manifest["execution"]["coding_jobs"]} <= set(submitted)
    assert manifest["software"]["snakemake-executor-plugin-slurm"]
    # the compute jobs' answers reached the cache (absorbed on this host) and their journals are gone
    assert not list((wd / "results/work/journal").glob("*.jsonl"))

    # the coding jobs again: every answer is handed over from the cache, none is sent
    sent = server.count()
    proc = _executor_run(wd, cfg, "--forcerun", "code_shard", targets=(CODING,))
    assert _submissions(proc)
    assert server.count() == sent
    assert tables(wd)["llm_calls"].cache_hit.all()
    _same_coding_tables(wd, laptop_run)
    print(f"\nslurm executor: {len(submitted)} sbatch call(s) for {len(t['chunks'])} chunks")


def test_a_remote_api_is_called_from_the_submit_host(tmp_path, slurm, fake_server):
    """cluster.coding: submit_host (the default for a remote API): the coding jobs are local rules, not SLURM jobs."""
    wd = scratch_copy(tmp_path / "wf", data=False)
    (wd / "data/raw").mkdir(parents=True)
    for i in range(3):
        (wd / f"data/raw/note{i}.txt").write_text(f"Note {i}: we covered the night shift for each other.\n")
    _profile(wd)
    cfg = fake_config(wd, fake_server, cluster={"coding": "submit_host"})
    proc = _executor_run(wd, cfg, targets=(CODING,))
    assert re.search(r"localrule code_shard:", proc.stdout + proc.stderr)
    meta = _shard_meta(wd)
    assert meta and all(m["qualcode.job_slurm_id"] == "" for m in meta)
    assert all(m["qualcode.job_host"] == socket.gethostname() for m in meta)
    assert _submissions(proc)  # ingest and tables still went to SLURM
    assert (tables(wd)["codings"].status == "coded").all()


def test_the_whole_workflow_inside_one_allocation(tmp_path, slurm, server, laptop_run):
    wd = scratch_copy(tmp_path / "wf")
    cfg = fake_config(wd, server)
    job = subprocess.run(
        ["sbatch", "--wait", "--parsable", "--cpus-per-task", str(os.cpu_count() or 1), "--output", "alloc-%j.log",
         "--wrap", f'{SNAKEMAKE} --cores "$SLURM_CPUS_PER_TASK" --configfile {cfg}'],
        cwd=wd, env=_job_env(ENV), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    job_id = job.stdout.strip()
    assert job.returncode == 0, (wd / f"alloc-{job_id}.log").read_text()[-3000:]
    assert _recorded_jobs(slurm)[job_id] == "COMPLETED"
    assert {m["qualcode.job_slurm_id"] for m in _shard_meta(wd)} == {job_id}
    _same_coding_tables(wd, laptop_run)


@pytest.mark.model
def test_a_model_server_inside_the_allocation(tmp_path, slurm):
    """workflow/slurm/with-server.sh: llama-cpp-python's server stands in for vLLM on a GPU node."""
    wd = scratch_copy(tmp_path / "wf", data=False)
    (wd / "data/raw").mkdir(parents=True)
    for i in range(2):
        (wd / f"data/raw/note{i}.txt").write_text(f"Nurse {i}: I was scared but proud of my team.\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = (
        f"{sys.executable} -m llama_cpp.server --model {local_model_path(SMOLLM2)} --model_alias smollm2 "
        f"--host 127.0.0.1 --port {port} --n_threads 1 --n_ctx 4096"
    )
    llm = {"provider": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "smollm2"}
    cfg = write_config(wd, {"llm": {**llm, "structured_output": "json_object"}, "cache_dir": str(wd / "cache")})
    env = _job_env({"QUALCODE_SERVER": server, "QUALCODE_SERVER_PORT": str(port)})
    job = subprocess.run(
        ["sbatch", "--wait", "--parsable", "--cpus-per-task", str(os.cpu_count() or 1), "--output", "server-%j.log",
         "workflow/slurm/with-server.sh",
         "--configfile", str(cfg)],
        cwd=wd, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    job_id = job.stdout.strip()
    assert job.returncode == 0, (wd / f"server-{job_id}.log").read_text()[-3000:]
    t = tables(wd)
    assert_invariants(t)
    calls = t["llm_calls"]
    assert (calls.base_url == llm["base_url"]).all() and not calls.cache_hit.any()
    assert calls[calls.status == "coded"].model_served.notna().all()
    assert {m["qualcode.job_slurm_id"] for m in _shard_meta(wd)} == {job_id}
    with socket.socket() as s:  # the server stopped with the job
        assert s.connect_ex(("127.0.0.1", port)) != 0
