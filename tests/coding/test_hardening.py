"""Hardening of the answer side (issue 7): nothing a server sends, no full or damaged cache disk and no second
run sharing the cache may crash a job, hold it past its bounds, lose an answer paid for or publish the key.

Each test drives the real openai client against the protocol-level fake server on 127.0.0.1. Time limits on
tests are hang guards (a hang runs for minutes or hours), never speed checks.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from qualcode import logs
from qualcode.coding.cache import AnswerCache
from qualcode.coding.coder import Coder, code_chunks
from qualcode.coding.validate import AnswerValidator
from qualcode.config import ConfigError, LLMConfig, resolve
from qualcode.errors import CacheError, ProviderError

from conftest import REPO, nurse_chunk
from fakeserver import FakeServer, Fault

# Made up, and assembled here so no key-shaped literal sits in the repository; long enough to be redacted.
KEY = "-".join(["not", "a", "real", "key", "hardening", "tests"])
KEY_ENV = "QUALCODE_TEST_KEY"


@pytest.fixture
def llm(fake_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)

    def make(**over) -> LLMConfig:
        base = dict(
            provider="openai", base_url=fake_server.base_url, model="fake", structured_output="json_schema",
            api_key_env=KEY_ENV, retry_initial_s=0.01, retry_max_s=0.05,
        )  # fmt: skip
        return LLMConfig(**{**base, **over})

    return make


def _code(cfg, prompts, cache_dir, chunks, **kw):
    with AnswerCache(cache_dir) as cache:
        return code_chunks(chunks, cfg, prompts, cache, **kw)


# -- 2. keys -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "-".join(["pasted", "Fake0" * 6]),  # not a variable name at all
        "_".join(["pasted", "Fake0" * 5]),  # a valid name, but shaped like a key: long, mixed case, digits
        "MY KEY",
        "1ABC",
    ],
)
def test_a_key_pasted_as_the_variable_name_is_refused_and_not_repeated(value):
    with pytest.raises(ConfigError) as exc:
        resolve({"llm": {"provider": "openai", "api_key_env": value}})
    assert "llm.api_key_env" in str(exc.value) and "name of an environment variable" in str(exc.value)
    assert value not in str(exc.value)


def test_ordinary_variable_names_are_accepted():
    for name in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "my_key", "_X2"):
        assert resolve({"llm": {"api_key_env": name}}).llm.api_key_env == name


def test_a_key_echoed_by_the_provider_reaches_no_log_message_or_table(llm, prompts, fake_server, tmp_path):
    log_file = tmp_path / "job.log"
    with pytest.raises(SystemExit), logs.job(log_file):
        # the provider repeats the key in an error text ...
        fake_server.script = [Fault("status", status=401, message=f"Incorrect API key provided: {KEY}.")]
        with pytest.raises(ProviderError) as exc:
            _code(llm(), prompts, tmp_path / "cache", [nurse_chunk(1)])
        assert KEY not in str(exc.value) and "[REDACTED]" in str(exc.value)
        # ... in an error object sent with status 200, and in an answer
        fake_server.script = [Fault("error_object", message=f"bad key {KEY}")]
        [r] = _code(llm(max_attempts=1), prompts, tmp_path / "cache", [nurse_chunk(2)])
        assert r.status == "failed" and "bad key [REDACTED]" in r.error
        fake_server.answer_fn = lambda body: json.dumps({"summary": f"echo {KEY}"})
        [r] = _code(llm(max_reasks=0), prompts, tmp_path / "cache", [nurse_chunk(3)])
        assert r.status == "failed" and KEY not in r.raw and "[REDACTED]" in r.raw
        raise ProviderError(str(exc.value))  # as a job ends on it: logged
    assert KEY not in log_file.read_text() and "[REDACTED]" in log_file.read_text()


def test_log_lines_are_redacted_whatever_module_writes_them(tmp_path):
    logs.register_secret(KEY)
    log_file = tmp_path / "job.log"
    with pytest.raises(SystemExit), logs.job(log_file):
        logging.getLogger("httpx").warning("header Authorization: Bearer %s", KEY)
        raise RuntimeError(f"boom with {KEY}")
    text = log_file.read_text()
    assert KEY not in text and text.count("[REDACTED]") >= 2


# -- 11. a traceback where Snakemake points ----------------------------------------------------------------------


def test_an_unexpected_error_leaves_its_traceback_in_the_rules_log(tmp_path):
    log_file = tmp_path / "job.log"
    with pytest.raises(SystemExit) as exc, logs.job(log_file):
        {}["no such key"]
    assert exc.value.code == 1
    text = log_file.read_text()
    assert "Traceback" in text and "KeyError: 'no such key'" in text and "please report" in text


# -- 3. a full cache disk ----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 512 KiB file system (tmpfs), so SQLite fails with a real 'database or disk is full'."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_cache_disk_stops_cleanly_and_the_rerun_pays_for_nothing_again(
    llm, prompts, fake_server, tmp_path, tiny_disk
):
    from fakeserver import default_answer

    # valid answers padded with white space (kept in the raw answer) fill the small disk after a few of them
    fake_server.answer_fn = lambda body: default_answer(body) + " " * 9000
    chunks = [nurse_chunk(i) for i in range(40)]
    journal = tmp_path / "results/work/journal/00000.jsonl"
    cfg = llm(concurrency=2)
    with pytest.raises(CacheError) as exc:
        _code(cfg, prompts, tiny_disk / "cache", chunks, journal=journal)
    msg = str(exc.value)
    assert f"cache_dir {tiny_disk / 'cache'}" in msg and "full" in msg and "free space" in msg
    paid = fake_server.count()
    assert 0 < paid < len(chunks)  # it stopped sending
    kept = [json.loads(line)["request_hash"] for line in journal.read_text().splitlines()]
    assert len(kept) == len(set(fake_server.counts_by_hash()))  # every answer received is in the journal

    # room again (the cache moves to a bigger disk, the journal stays): the rerun pays only for the rest
    fake_server.answer_fn = None
    results = _code(cfg, prompts, tmp_path / "bigger", chunks, journal=journal)
    assert all(r.status == "coded" for r in results)
    assert fake_server.count() == len(chunks) + (paid - len(kept))
    assert max(fake_server.ok_counts_by_hash().values()) == 1
    assert not journal.exists()  # every answer is in the cache now


# -- 4. two runs sharing one cache -------------------------------------------------------------------------------

_RUN_ONE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from qualcode.coding import prompts as P
    from qualcode.inputs import codebook
    from qualcode.coding.cache import AnswerCache
    from qualcode.records import Chunk
    from qualcode.coding.coder import code_chunks
    from qualcode.config import LLMConfig

    base_url, cache_dir, repo, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    cb = codebook.load(repo / "tests/data/codebook.yaml")
    prompts = P.load(repo / "config/prompts/system.j2", repo / "config/prompts/user.j2", cb, "json_schema")
    cfg = LLMConfig(provider="openai", base_url=base_url, model="fake", structured_output="json_schema",
                    api_key_env="QUALCODE_TEST_KEY", concurrency=16)
    chunks = []
    for i in range(n):
        text = f"Answer {i}: the bus drivers shared masks and the depot closed in week {i}."
        chunks.append(Chunk(f"c{i:04d}", "survey.csv", 0, 0, len(text), 20, (), text))
    with AnswerCache(cache_dir) as cache:
        results = code_chunks(chunks, cfg, prompts, cache)
    print(sum(r.status == "coded" for r in results))
    """
)


def test_two_runs_sharing_a_cache_pay_once(tmp_path):
    n = 200
    script = tmp_path / "run_one.py"
    script.write_text(_RUN_ONE)
    with FakeServer(seed=3, latency=(0.05, 0.15)) as server:
        env = {**os.environ, KEY_ENV: KEY}
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), server.base_url, str(tmp_path / "cache"), str(REPO), str(n)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert [o[0].strip() for o in outs] == [str(n), str(n)]
        assert server.count() == n  # each request sent once, by whichever run claimed it
        assert max(server.ok_counts_by_hash().values()) == 1


def test_a_lease_left_by_a_killed_process_is_taken_over(tmp_path):
    import socket

    from qualcode.coding.coder import _holder_is_gone, _owner_id

    me = _owner_id()
    dead = f"{socket.gethostname()}:{2**22 + 12345}:deadbeef"  # a pid above Linux's maximum: no such process
    with AnswerCache(tmp_path / "cache") as cache:
        assert cache.claim("k", dead, 60)
        assert not cache.claim("k", "other-host:1:x", 60)  # without a liveness check: wait for expiry
        assert cache.claim("k", me, 60, is_stale=_holder_is_gone)  # its holder is gone: taken over at once
        assert not cache.claim("k", "other-host:1:x", 60, is_stale=_holder_is_gone)  # this process is alive
        cache.release("k", "other-host:1:x")  # only the holder releases
        assert not cache.claim("k", "other-host:1:x", 60)
        cache.release("k", me)
        assert cache.claim("k", "other-host:1:x", 60)


# -- 5. answers that are slow to parse ---------------------------------------------------------------------------


@pytest.mark.timeout(20)  # a hang guard: the cubic fence regex took hours on this input
@pytest.mark.parametrize("kind", ["fence_whitespace", "deep_nesting", "big_number"])
def test_hostile_answers_are_rejected_as_answers_not_crashes(codebook, kind):
    from fakeserver import HOSTILE_CONTENT

    validate = AnswerValidator(codebook.answer_schema(), codebook.answer_model())
    from qualcode.errors import AnswerError

    with pytest.raises(AnswerError):
        validate(HOSTILE_CONTENT[kind])
    with pytest.raises(AnswerError, match="characters long"):
        validate("```json\n" + " " * 2_000_000 + "{}```")


def test_fenced_answers_are_still_accepted(codebook):
    validate = AnswerValidator(codebook.answer_schema(), codebook.answer_model())
    from fakeserver import generate_instance

    doc = json.dumps(generate_instance(codebook.answer_schema(), "We had no masks"))
    assert validate(f"```json\n{doc}\n```") == json.loads(doc)
    assert validate(f"  ```\n{doc}```  ") == json.loads(doc)


@pytest.mark.timeout(120)
def test_hostile_answers_through_the_coding_loop_fail_their_chunk_only(llm, prompts, fake_server, tmp_path):
    fake_server.script = [Fault(k) for k in ("fence_whitespace", "deep_nesting", "big_number")]
    chunks = [nurse_chunk(i) for i in range(3)]
    results = _code(llm(concurrency=1, max_reasks=0), prompts, tmp_path / "cache", chunks)
    assert [r.status for r in results] == ["failed"] * 3
    assert "nested too deeply" in results[1].error and "ValueError" in results[2].error
    rerun = _code(llm(concurrency=1, max_reasks=0), prompts, tmp_path / "cache", chunks)
    assert all(r.status == "coded" for r in rerun)  # nothing bad was cached; the rerun asks again


# -- 6. timeouts that are bounds ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)  # a hang guard: one byte a second held a request ~40 s per try before
def test_a_dripping_server_is_cut_off_at_timeout_s(llm, prompts, fake_server, tmp_path):
    fake_server.drip_interval = 0.5
    fake_server.script = [Fault("drip")] * 2
    [r] = _code(llm(timeout_s=1, max_attempts=2, concurrency=1), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "failed" and fake_server.count() == 2
    assert "llm.timeout_s (1 s)" in r.error and "cannot reach" not in r.error


def test_a_retry_after_past_the_retry_budget_gives_up_and_says_so(llm, prompts, fake_server, tmp_path, caplog):
    fake_server.script = [Fault("status", status=429, retry_after=90)]
    [r] = _code(llm(max_retry_time_s=5, concurrency=1), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "failed" and fake_server.count() == 1  # not waited, not sent again
    assert "429" in r.error
    assert "Retry-After" in caplog.text and "llm.max_retry_time_s" in caplog.text


def test_a_server_that_does_not_answer_in_time_is_not_called_unreachable(llm, prompts, fake_server, tmp_path):
    fake_server.hang_seconds = 5
    fake_server.script = [Fault("hang")]
    [r] = _code(llm(timeout_s=0.5, max_attempts=1), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert "within llm.timeout_s" in r.error and "cannot reach" not in r.error


# -- 11. what a failure row says ---------------------------------------------------------------------------------


def test_a_refusal_and_an_error_object_keep_their_text_in_the_failure(llm, prompts, fake_server, tmp_path):
    fake_server.script = [Fault("refusal"), Fault("error_object", message="Provider returned error: overloaded")]
    chunks = [nurse_chunk(1), nurse_chunk(2)]
    results = _code(llm(concurrency=1, max_attempts=1), prompts, tmp_path / "cache", chunks)
    assert results[0].status == "failed" and "cannot help with that" in results[0].error
    assert results[1].status == "failed" and "Provider returned error: overloaded" in results[1].error


def test_the_ledger_is_opened_only_when_a_limit_is_set(llm, prompts, tmp_path):
    _code(llm(), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert not (tmp_path / "cache" / "ledger").exists()


def test_a_damaged_cache_names_cache_dir_and_how_to_recover(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "cache.db").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CacheError) as exc:
        AnswerCache(cache_dir)
    assert f"cache_dir {cache_dir}" in str(exc.value) and "move" in str(exc.value)
    assert "import-archive" in str(exc.value)


def test_an_empty_cache_file_is_warned_about(tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "cache.db").write_bytes(b"")
    AnswerCache(cache_dir).close()
    assert "empty file" in caplog.text and "asked again" in caplog.text


# -- 1. the replay archive is never published short ---------------------------------------------------------------


def test_the_archive_is_built_from_the_shards_not_the_cache(codebook, prompts, llm, tmp_path):
    from qualcode.coding import archive
    from qualcode.coding.coder import Requests

    chunks = [nurse_chunk(i) for i in range(5)]
    cfg = llm()
    results = _code(cfg, prompts, tmp_path / "cache", chunks)
    pairs = archive.from_results(results, chunks, Requests(cfg, prompts))
    n = archive.export(pairs, tmp_path / "a.jsonl.gz")
    assert n == len(chunks)
    lines = gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).decode().splitlines()
    assert sorted(json.loads(x)["request_hash"] for x in lines) == sorted(r.request_hash for r in results)

    changed = llm(temperature=0.5)  # a shard coded with other settings cannot be archived as this run's
    from qualcode.errors import QualcodeError

    with pytest.raises(QualcodeError, match="replay archive would not match the run"):
        archive.export(archive.from_results(results, chunks, Requests(changed, prompts)), tmp_path / "b.jsonl.gz")


def test_code_all_survives_a_bug_in_onenurse_chunk(llm, prompts, tmp_path, monkeypatch):
    """An unexpected exception stops sending cleanly, listing pending chunks, instead of tearing the loop down."""
    from qualcode.errors import QualcodeError

    with AnswerCache(tmp_path / "cache") as cache:
        coder = Coder(llm(concurrency=1), prompts, cache)
        original = coder.code

        async def flaky(chunk):
            if chunk.chunk_id == "c0001":
                raise RuntimeError("bug")
            return await original(chunk)

        monkeypatch.setattr(coder, "code", flaky)
        with pytest.raises(QualcodeError, match="unexpected RuntimeError while coding chunk c0001"):
            asyncio.run(coder.code_all([nurse_chunk(0), nurse_chunk(1), nurse_chunk(2)]))
        assert len(cache.keys()) == 1  # c0000 answered and kept; nothing sent after the bug


@pytest.mark.e2e
def test_archive_is_complete_after_the_cache_and_the_archive_are_deleted(tmp_path, fake_server):
    """Before: exit 0 and an archive of 0 entries for 32 coded chunks, its hash published in the manifest."""
    import shutil

    import pandas as pd

    from workflow_helpers import fake_config, naming_keys, run, scratch_copy, tables

    wd = scratch_copy(tmp_path / "wf")
    cfg = fake_config(wd, fake_server)
    env = {KEY_ENV: KEY}
    run(wd, "--configfile", str(cfg), env=env)
    sent = fake_server.count()
    shutil.rmtree(wd / "cache")
    (wd / "results/replay/answers.jsonl.gz").unlink()
    run(wd, "--configfile", str(cfg), env=env)
    t = tables(wd)
    coded = t["llm_calls"][t["codings"].status.eq("coded").to_numpy()]
    named = naming_keys(wd)  # the themes' naming questions (themes.names), one per theme
    assert len(named) == len(pd.read_parquet(wd / "results/themes.parquet")) > 0
    with gzip.open(wd / "results/replay/answers.jsonl.gz", "rt") as fh:
        archived = {json.loads(line)["request_hash"] for line in fh}
    assert len(coded) > 0 and archived == set(coded.request_hash) | named
    manifest = json.loads((wd / "results/manifest.json").read_text())
    assert manifest["sha256"]["outputs"]["replay_archive"]
    assert sent == len(coded) + len(named)  # one request per coded chunk and per theme
    assert fake_server.count() == sent  # the rerun re-sent nothing: the shards and themes job still held the answers
