"""Reliability through real Snakemake and the real openai client against the fault-injecting server:
quotas, budgets, chaos and SIGKILL lose nothing that was paid for."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from qualcode.coding.cache import AnswerCache

from workflow_helpers import (
    CODING,
    SNAKEMAKE,
    assert_invariants,
    fake_config,
    naming_keys,
    request_key,
    run,
    scratch_copy,
    tables,
)

pytestmark = pytest.mark.e2e

KEY = "sk-test-FAKE-reliability-key-99"
ENV = {"QUALCODE_TEST_KEY": KEY}
ARCHIVE = "results/replay/answers.jsonl.gz"


def _config(wd, server, *, llm=None, **top):
    return fake_config(wd, server, llm, **top)


def _key_of(body: dict, base_url: str) -> str:
    """Our cache key for a request body as the server saw it, extra_body included (checked in test_coding.py)."""
    return request_key(body, base_url)


def _survey(wd, n: int) -> None:
    """A corpus of n short survey answers: n chunks."""
    raw = wd / "data" / "raw"
    raw.mkdir(parents=True)
    rng = random.Random(n)
    words = "masks shifts bus night patients fear proud tired gloves union neighbours rent kids".split()
    with open(raw / "survey.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"R{i:04d}", f"Answer {i}: " + " ".join(rng.choice(words) for _ in range(25)) + "."])


def test_daily_quota_stops_cleanly_and_the_next_run_resends_nothing(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf")
    cfg = _config(wd, fake_server, llm={"concurrency": 2}, limits={"requests_per_day": 10})
    proc = run(wd, CODING, "--configfile", str(cfg), env=ENV, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "limits.requests_per_day" in out and "resets at" in out and "pending" in out
    assert fake_server.count() == 10  # not one request past the quota
    logs = "".join(p.read_text() for p in (wd / "results/logs/code_shard").glob("*.log"))
    assert "pending, not sent:" in logs

    proc = run(wd, CODING, "--configfile", str(cfg), env=ENV, check=False)  # same day: still stopped, nothing sent
    assert proc.returncode != 0 and fake_server.count() == 10

    cfg = _config(wd, fake_server, llm={"concurrency": 2}, limits={"requests_per_day": 1000})
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    n_chunks = len(tables(wd)["chunks"])
    assert fake_server.count() == n_chunks  # the 10 answers of the first run were not asked again
    assert max(fake_server.ok_counts_by_hash().values()) == 1


def test_budget_stops_before_it_is_passed(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf")
    prices = {"fake-model": {"input": 1.0, "output": 1.0}}  # per million tokens
    cfg = _config(wd, fake_server, llm={"concurrency": 3, "max_tokens": 1000}, prices=prices, limits={"budget": 0.01})
    proc = run(wd, CODING, "--configfile", str(cfg), env=ENV, check=False)
    assert proc.returncode != 0 and "limits.budget" in proc.stdout + proc.stderr
    sent = fake_server.count()
    n_chunks = pq.read_metadata(wd / "results/work/chunks.parquet").num_rows
    assert 0 < sent < n_chunks
    from qualcode.coding.limits import Ledger
    from qualcode.config import LimitsConfig, Price

    ledger = Ledger(wd / "cache", f"{fake_server.base_url} fake-model", LimitsConfig(), Price(input=1, output=1))
    assert 0 < ledger.spent() <= 0.01
    ledger.close()

    cfg = _config(wd, fake_server, llm={"concurrency": 3, "max_tokens": 1000}, prices=prices, limits={"budget": 5})
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    assert fake_server.count() == len(tables(wd)["chunks"])
    assert tables(wd)["llm_calls"].cost.notna().all()


def test_estimate_counts_what_is_left_to_send(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf")
    prices = {"fake-model": {"input": 0.15, "output": 0.6}}
    cfg = _config(wd, fake_server, prices=prices)

    def estimate() -> dict[str, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "qualcode", "estimate", "--config", "config/config.yaml", "--config", str(cfg)],
            cwd=wd,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
        return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in proc.stdout.splitlines())

    before = estimate()
    n = int(before["chunks"])
    assert n > 0 and before["requests to send"] == str(n)
    assert before["cost for fake-model"].endswith("(every answer at llm.max_tokens)")
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    assert len(tables(wd)["chunks"]) == n and fake_server.count() == n
    after = estimate()
    assert after["already answered (cache)"] == str(n) and after["requests to send"] == "0"


# Every hostile answer of the hardening issue, each at 1%: slow drips and hangs (cut at llm.timeout_s), a
# Retry-After far past llm.max_retry_time_s, error objects and refusals with status 200, and content that is
# slow to parse (a fence followed by 20,000 newlines, 100,000 open brackets, a 10,000-digit number).
HOSTILE = {
    "drip": 0.01,
    "hang": 0.01,
    "status:429:retry_after=90": 0.01,
    "error_object": 0.01,
    "refusal": 0.01,
    "fence_whitespace": 0.01,
    "deep_nesting": 0.01,
    "big_number": 0.01,
}


def test_chaos_every_chunk_coded_or_listed_and_no_answer_paid_twice(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf", data=False)
    n = 520
    _survey(wd, n)
    fake_server.fault_rates = {
        # 30% transient faults
        "status:503": 0.08,
        "status:500": 0.04,
        "status:429": 0.04,
        "status:429:retry_after=0.05": 0.04,
        "reset": 0.05,
        "bad_body": 0.05,
        # 10% answers that are not valid
        "invalid_json": 0.05,
        "schema_invalid": 0.05,
    }
    fake_server.fault_rates = {**fake_server.fault_rates, **HOSTILE}
    fake_server.drip_interval, fake_server.hang_seconds = 0.3, 3
    cfg = _config(
        wd,
        fake_server,
        llm={"concurrency": 8, "max_attempts": 6, "max_reasks": 2, "retry_initial_s": 0.01, "retry_max_s": 0.05,
             "timeout_s": 1, "max_retry_time_s": 20},
        coding={"shard_size": 130},
    )  # fmt: skip
    started = time.monotonic()
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    elapsed = time.monotonic() - started
    t = tables(wd)
    assert_invariants(t)
    calls = t["llm_calls"]
    assert len(calls) == n
    failed = int((t["codings"].status == "failed").sum())
    retries, reasks = int(calls.retries.sum()), int(calls.reasks.sum())
    # every request is accounted for: the first ask of each chunk, each retry, each re-ask
    assert fake_server.count() == n + retries + reasks
    # every fault caused exactly one retry or re-ask, or ended its chunk in the failures table
    assert fake_server.fault_count() == retries + reasks + failed
    assert max(fake_server.ok_counts_by_hash().values()) == 1  # no valid answer was paid for twice
    print(
        f"\nchaos: {n} chunks, {fake_server.count()} requests, {fake_server.fault_count()} faults, "
        f"{retries} retries, {reasks} re-asks, {failed} failures, {elapsed:.1f} s"
    )


def test_sigkill_at_random_moments_never_repeats_an_answer_received(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf", data=False)
    n = 200
    _survey(wd, n)
    fake_server.latency = (0.1, 0.4)
    rng = random.Random(7)
    mid_run_kills = 0
    for round_ in range(3):
        # a new model name each round, so every round has all its requests still to send
        cfg = _config(
            wd, fake_server, llm={"concurrency": 4, "model": f"fake-model-{round_}"}, coding={"shard_size": 40}
        )
        with AnswerCache(wd / "cache") as c:
            before = set(c.keys())
        proc = subprocess.Popen(
            [SNAKEMAKE, "--cores", "4", CODING, "--configfile", str(cfg)],
            cwd=wd,
            env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # kill at a random point of the coding phase: once a random number of answers has arrived
        target, deadline = rng.randint(1, n // 2), time.monotonic() + 300
        with AnswerCache(wd / "cache") as c:
            while len(c) - len(before) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))  # and not always right after an answer was written
        with contextlib.suppress(ProcessLookupError):  # the run may have finished first
            os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
        proc.wait()
        with AnswerCache(wd / "cache") as c:  # opens cleanly after the kill
            received = set(c.keys()) - before
        mid_run_kills += 0 < len(received) < n
        sent_before = fake_server.count()

        run(wd, "--configfile", str(cfg), "--unlock")  # as Snakemake's message after a kill says
        run(wd, CODING, "--configfile", str(cfg), env=ENV)  # incomplete outputs are redone
        asked_again = {_key_of(b, fake_server.base_url) for b in fake_server.requests[sent_before:]}
        assert not asked_again & received, "an answer received before the kill was requested again"
        assert len(asked_again) == n - len(received)
        t = tables(wd)
        assert_invariants(t)
        assert (t["codings"].status == "coded").all()
    assert mid_run_kills >= 1


def test_chaos_two_runs_sharing_a_cache_killed_three_times_pay_once_and_archive_everything(tmp_path, fake_server):
    """The hardening issue's chaos run: every fault mixed with normal answers, 1,000 chunks, two runs in two
    folders sharing one cache, both killed with SIGKILL at random points three times, then rerun."""
    n, rng = 1000, random.Random(11)
    dirs = [scratch_copy(tmp_path / name, data=False) for name in ("a", "b")]
    for wd in dirs:
        _survey(wd, n)  # the same texts in both: the same requests
    fake_server.fault_rates = {"status:503": 0.04, "status:429:retry_after=0.05": 0.03, "reset": 0.03,
                               "bad_body": 0.02, "invalid_json": 0.03, "schema_invalid": 0.03, **HOSTILE}  # fmt: skip
    fake_server.latency, fake_server.drip_interval, fake_server.hang_seconds = (0.0, 0.05), 0.3, 3
    llm = {"concurrency": 8, "retry_initial_s": 0.01, "retry_max_s": 0.05, "timeout_s": 1, "max_retry_time_s": 10}
    cfgs = [
        _config(wd, fake_server, llm=llm, cache=tmp_path / "shared-cache", coding={"shard_size": 250}) for wd in dirs
    ]
    bound = (1 + 2) * (llm["max_retry_time_s"] + llm["timeout_s"])  # per chunk: (1 + max_reasks) sequences

    def start(wd, cfg):
        return subprocess.Popen(
            [SNAKEMAKE, "--cores", "4", CODING, ARCHIVE, "--configfile", str(cfg)], cwd=wd, env={**os.environ, **ENV},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    answered_before_kills: set[str] = set()
    for _ in range(3):
        before = fake_server.count()
        procs = [start(wd, cfg) for wd, cfg in zip(dirs, cfgs, strict=True)]
        target, deadline = before + rng.randint(50, 300), time.monotonic() + 300
        while fake_server.count() < target and all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        asked = {_key_of(b, fake_server.base_url) for b in fake_server.requests[before:]}
        assert not asked & answered_before_kills, "an answer received before a kill was requested again"
        with AnswerCache(tmp_path / "shared-cache") as c:
            answered_before_kills = set(c.keys())
        for wd, cfg in zip(dirs, cfgs, strict=True):
            run(wd, "--configfile", str(cfg), "--unlock")
    sent_before_rerun = fake_server.count()
    procs = [start(wd, cfg) for wd, cfg in zip(dirs, cfgs, strict=True)]
    assert [p.wait(timeout=1200) for p in procs] == [0, 0]

    asked_again = {_key_of(b, fake_server.base_url) for b in fake_server.requests[sent_before_rerun:]}
    assert not asked_again & answered_before_kills, "an answer received before a kill was requested again"
    ok_after = {}
    for digest, kind in fake_server.outcomes[sent_before_rerun:]:
        ok_after[digest] = ok_after.get(digest, 0) + (kind == "ok")
    assert max(ok_after.values(), default=0) <= 1, "the two runs paid twice for an answer"
    for wd in dirs:
        t = tables(wd)
        assert_invariants(t)  # every chunk coded or a failure row
        calls = t["llm_calls"]
        assert len(calls) == n
        assert (calls.latency_s.dropna() <= bound).all()  # no request sequence past its bounds
        coded = set(t["codings"].chunk_id[t["codings"].status == "coded"])
        coded_hashes = set(calls.request_hash[calls.chunk_id.isin(coded)])
        with gzip.open(wd / "results/replay/answers.jsonl.gz", "rt") as fh:
            archived = {json.loads(line)["request_hash"] for line in fh}
        # the archive holds every coded chunk and the themes' naming questions answered (themes.names), nothing else
        assert archived == coded_hashes | naming_keys(wd)
    print(f"\nchaos x2 runs x3 kills: {fake_server.count()} requests, {fake_server.fault_count()} faults")
