"""Coding on compute nodes (cluster.coding: compute) without opening a SQLite database there: the submit host hands
each job the cached answers of its shard and absorbs the job's journal. Run here on one machine through Snakemake, the
same rules a cluster runs; tests/test_slurm.py runs them on a real scheduler."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from test_reliability import _survey

from qualcode import config
from qualcode.coding.cache import AnswerCache

from workflow_helpers import CODING, SNAKEMAKE, assert_invariants, fake_config, request_key, run, scratch_copy, tables

ENV = {"QUALCODE_TEST_KEY": "sk-test-cluster-fake"}


def _guarded(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize(
    "opening",
    [
        "from qualcode.coding.cache import AnswerCache; AnswerCache(d)",
        "from qualcode.coding.limits import Ledger; from qualcode.config import LimitsConfig; "
        "Ledger(d, 'x', LimitsConfig(requests_per_minute=1), None)",
    ],
    ids=["cache", "ledger"],
)
def test_a_compute_job_cannot_open_the_cache_or_the_ledger(tmp_path, opening):
    code = f"d = {str(tmp_path / 'cache')!r}\n"
    assert _guarded(code + opening).returncode == 0  # allowed anywhere else
    proc = _guarded(code + "from qualcode.coding import cache; cache.forbid('a compute node')\n" + opening)
    assert proc.returncode != 0 and "must not be opened here: a compute node" in proc.stderr


def test_where_coding_runs_by_default():
    def where(cluster: bool, **llm) -> bool:
        return config.resolve({"llm": llm}).coding_on_compute(cluster)

    assert not where(False) and not where(False, provider="openai", base_url="http://127.0.0.1:8000/v1")
    assert where(True)  # the embedded model
    assert where(True, provider="openai", base_url="http://localhost:8000/v1")  # a server beside the job
    assert not where(True, provider="openai")  # OpenAI: from the submit host
    assert not where(True, provider="openai", base_url="https://openrouter.ai/api/v1")
    forced = config.resolve({"cluster": {"coding": "compute"}, "llm": {"provider": "openai"}})
    assert forced.coding_on_compute(False) and forced.coding_on_compute(True)
    with pytest.raises(config.ConfigError, match="cluster.coding"):
        config.resolve({"cluster": {"coding": "compute"}, "limits": {"requests_per_day": 5}})


def _journalled(wd) -> set[str]:
    import json

    keys = set()
    for path in (wd / "results/work/journal").glob("*.jsonl"):
        for line in path.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                keys.add(json.loads(line)["request_hash"])
    return keys


# the coding tables, and the compute jobs' answers absorbed into the cache on the submit host
TARGETS = (CODING, "results/work/journal/absorbed.json")


@pytest.mark.e2e
def test_compute_jobs_code_without_the_cache_and_a_killed_one_resends_nothing(tmp_path, fake_server):
    """Every coding job runs with the cache forbidden to it (opening the cache or the ledger fails the job). One is
    killed with SIGKILL mid-shard; the rerun sends only what its journal does not hold, and the cache gets it all."""
    wd = scratch_copy(tmp_path / "wf", data=False)
    n = 120
    _survey(wd, n)
    fake_server.latency = (0.05, 0.2)
    cfg = fake_config(wd, fake_server, llm={"concurrency": 2}, coding={"shard_size": 30}, cluster={"coding": "compute"})
    proc = subprocess.Popen(
        [SNAKEMAKE, "--cores", "4", *TARGETS, "--configfile", str(cfg)],
        cwd=wd, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while len(_journalled(wd)) < n // 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    received = _journalled(wd)
    assert 0 < len(received) < n, "the kill did not land mid-run"

    sent_before = fake_server.count()
    run(wd, "--configfile", str(cfg), "--unlock")
    run(wd, *TARGETS, "--configfile", str(cfg), env=ENV)
    asked_again = {request_key(b, fake_server.base_url) for b in fake_server.requests[sent_before:]}
    assert not asked_again & received, "an answer received before the kill was requested again"
    assert len(asked_again) == n - len(received)
    t = tables(wd)
    assert_invariants(t)
    assert (t["codings"].status == "coded").all()
    with AnswerCache(wd / "cache") as c:  # absorbed on the submit host
        assert set(c.keys()) == set(t["llm_calls"].request_hash)
    assert not list((wd / "results/work/journal").glob("*.jsonl"))
    logs = " ".join(p.read_text() for p in (wd / "results/logs/code_handoff").glob("*.log"))
    assert "handed over from the cache" in logs


def test_the_hand_over_holds_only_cached_answers_and_the_job_adds_its_journal(tmp_path):
    from qualcode.coding import journal
    from qualcode.records import CachedAnswer

    def answer(n: int) -> CachedAnswer:
        return CachedAnswer(answer={"n": n}, raw=str(n), model_served="m", system_fingerprint=None,
                            finish_reason="stop", tokens_in=1, tokens_out=1, latency_s=0.1, attempts=1, reasks=0,
                            retries=0, answered_at="2026-01-01T00:00:00+00:00")  # fmt: skip

    with AnswerCache(tmp_path / "cache") as c:
        c.put("a", answer(1))
        handed, missing = journal.hand_over(c, ["a", "b", "a"], tmp_path / "handed.jsonl")
    assert (handed, missing) == (1, 1)
    own = journal.Journal(tmp_path / "own.jsonl")
    own.append("b", answer(2))  # received by an earlier attempt of the job, then killed
    own.close()
    known = journal.HandedAnswers(tmp_path / "handed.jsonl", tmp_path / "own.jsonl", tmp_path / "absent.jsonl")
    assert known.get("a") == answer(1) and known.get("b") == answer(2) and known.get("c") is None
