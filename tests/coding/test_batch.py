"""llm.mode batch and batch_files: the same answers and tables as in real time, nothing submitted twice."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from batchfake import BatchFake, Plan

from qualcode.coding.batch import parse_output, split_lines
from qualcode.coding.cache import AnswerCache
from qualcode.coding.coder import code_chunks, request_keys
from qualcode.config import LLMConfig
from qualcode.errors import BatchPending, ProviderError
from qualcode.outputs.results import coding_tables

from conftest import REPO, _quote_the_passage, nurse_chunk

KEY = "sk-test-FAKE-batch-key-7"
FAST = {"poll_s": 0.05}
OPENAI = {"provider": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}
PRICES = {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("QUALCODE_TEST_KEY", KEY)
    with BatchFake(seed=1) as server:
        server.answer_fn = _quote_the_passage
        yield server


def _cfg(server, mode="batch", **batch) -> LLMConfig:
    return LLMConfig(
        provider="openai", base_url=server.base_url, model="fake", structured_output="json_schema",
        api_key_env="QUALCODE_TEST_KEY", mode=mode, batch={**FAST, **batch},
    )  # fmt: skip


def _run(chunks, cfg, prompts, cache_dir, **kw):
    with AnswerCache(cache_dir) as cache:
        return code_chunks(chunks, cfg, prompts, cache, journal=Path(cache_dir).parent / "journal" / "job.jsonl", **kw)


def _table_bytes(codebook, chunks, results) -> dict[str, bytes]:
    built = coding_tables(codebook, chunks, results)
    out = {}
    for name in ("codings", "codes"):
        sink = io.BytesIO()
        pq.write_table(built[name], sink)
        out[name] = sink.getvalue()
    return out


CHUNKS = [nurse_chunk(i) for i in range(5)]


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True)


def test_a_batch_run_sends_the_realtime_bodies_and_gives_the_same_tables(fake, codebook, prompts, tmp_path):
    realtime = _run(CHUNKS, _cfg(fake, "realtime"), prompts, tmp_path / "rt" / "cache")
    sent_realtime = list(fake.requests)
    batched = _run(CHUNKS, _cfg(fake), prompts, tmp_path / "b" / "cache")
    # one batch, one line per chunk, each line the very body a realtime request sent
    assert len(fake.batches) == 1 and len(fake.requests) == len(sent_realtime) == len(CHUNKS)
    assert sorted(map(_canonical, fake.batch_bodies)) == sorted(map(_canonical, sent_realtime))
    assert [r.request_hash for r in batched] == [r.request_hash for r in realtime]
    assert all(r.status == "coded" and not r.cache_hit for r in batched)
    assert _table_bytes(codebook, CHUNKS, batched) == _table_bytes(codebook, CHUNKS, realtime)
    [batch_id] = fake.batches
    assert {r.batch_id for r in batched} == {batch_id} and {r.batch_id for r in realtime} == {None}
    # the custom id is the cache key
    assert set(fake.custom_ids_seen) == {r.request_hash for r in batched}
    calls = coding_tables(codebook, CHUNKS, batched)["llm_calls"].to_pandas()
    assert set(calls.batch_id) == {batch_id}

    # a rerun finds every answer in the cache: no batch, no request
    again = _run(CHUNKS, _cfg(fake), prompts, tmp_path / "b" / "cache")
    assert len(fake.batches) == 1 and len(fake.requests) == len(CHUNKS) and fake.looks == 3
    assert all(r.cache_hit for r in again) and {r.batch_id for r in again} == {batch_id}


def test_files_are_split_at_the_request_and_byte_limits(fake, prompts, tmp_path):
    results = _run(CHUNKS, _cfg(fake, max_requests=2), prompts, tmp_path / "cache")
    sizes = sorted(b["object"]["request_counts"]["total"] for b in fake.batches.values())
    assert sizes == [1, 2, 2] and all(r.status == "coded" for r in results)
    lines = ["a" * 10, "b" * 10, "c" * 10]
    assert list(split_lines(lines, 100, 22)) == [["a" * 10, "b" * 10], ["c" * 10]]  # 11 bytes a line with its newline
    assert list(split_lines(lines, 100, 21)) == [["a" * 10], ["b" * 10], ["c" * 10]]


@pytest.mark.parametrize("end", ["expired", "failed", "cancelled"])
def test_an_expired_batch_keeps_its_answers_and_only_the_rest_are_sent_again(fake, prompts, tmp_path, end):
    fake.plans = [Plan(end=end, answered=2)]
    results = _run(CHUNKS, _cfg(fake), prompts, tmp_path / "cache")
    assert all(r.status == "coded" for r in results)
    first, second = fake.batches.values()
    assert first["object"]["status"] == end and second["object"]["status"] == "completed"
    expired_ids = [line["custom_id"] for line in first["lines"]]
    assert [line["custom_id"] for line in second["lines"]] == expired_ids[2:]
    assert set(fake.custom_ids_seen.values()) == {1, 2} and sum(fake.custom_ids_seen.values()) == len(CHUNKS) + 3
    by_key = {r.request_hash: r for r in results}
    assert [by_key[k].batch_id for k in expired_ids] == ["batch_fake0001"] * 2 + ["batch_fake0002"] * 3


def test_error_lines_are_retries_then_a_failure_row_with_the_providers_message(fake, prompts, tmp_path):
    bad = CHUNKS[1]
    # line 1 fails in every batch it is in (max_attempts 2); line 0 fails once, then is answered
    cfg = _cfg(fake).model_copy(update={"max_attempts": 2})
    keys = request_keys(CHUNKS, cfg, prompts)
    fake.plans = [Plan(errors={keys[0], keys[1]}), Plan(errors={keys[1]})]
    results = _run(CHUNKS, cfg, prompts, tmp_path / "cache")
    by_id = {r.chunk_id: r for r in results}
    failed = by_id[bad.chunk_id]
    assert failed.status == "failed" and failed.retries == 1
    assert "HTTP 500" in failed.error and "injected batch error" in failed.error
    assert by_id[CHUNKS[0].chunk_id].status == "coded", by_id[CHUNKS[0].chunk_id].error
    assert by_id[CHUNKS[0].chunk_id].retries == 1
    assert [r.status for r in results].count("coded") == len(CHUNKS) - 1
    assert len(fake.batches) == 2
    # the failed chunk is asked again by the next run (its batches are done with), the coded ones are not
    fake.plans = []
    again = _run(CHUNKS, cfg, prompts, tmp_path / "cache")
    assert all(r.status == "coded" for r in again)
    assert [line["custom_id"] for line in fake.batches["batch_fake0003"]["lines"]] == [failed.request_hash]


def test_a_batch_created_behind_an_error_is_found_and_never_created_twice(fake, prompts, tmp_path):
    fake.create_faults = 1  # retried: the retry finds the batch by its input file
    results = _run(CHUNKS, _cfg(fake), prompts, tmp_path / "a" / "cache")
    assert all(r.status == "coded" for r in results) and len(fake.batches) == 1
    assert set(fake.custom_ids_seen.values()) == {1}
    # no retries left: the run stops with the batch recorded as pending; the next run finds it and takes its answers
    fake.create_faults = 1
    cfg = _cfg(fake).model_copy(update={"max_attempts": 1})
    with pytest.raises(ProviderError, match="creating a batch"):
        _run(CHUNKS[:3], cfg.model_copy(update={"seed": 7}), prompts, tmp_path / "b" / "cache")
    [record] = (tmp_path / "b" / "cache" / "batches").iterdir()
    assert record.name.startswith("pending-") and json.loads(record.read_text())["pending"] is True
    results = _run(CHUNKS[:3], cfg.model_copy(update={"seed": 7}), prompts, tmp_path / "b" / "cache")
    assert all(r.status == "coded" and r.batch_id == "batch_fake0002" for r in results)
    assert len(fake.batches) == 2 and set(fake.custom_ids_seen.values()) == {1}
    assert [p.name for p in (tmp_path / "b" / "cache" / "batches").iterdir()] == ["batch_fake0002.json"]


def test_a_job_past_max_wait_stops_and_the_next_run_takes_the_answers(fake, prompts, tmp_path, caplog):
    fake.plans = [Plan(hold=True)]
    cfg = _cfg(fake, max_wait_h=0.0001)  # 0.36 s
    with caplog.at_level("INFO"), pytest.raises(BatchPending, match=r"batch_fake0001 is still in_progress after llm"):
        _run(CHUNKS, cfg, prompts, tmp_path / "cache")
    polls = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch batch_fake0001: in_progress")]
    assert polls and polls[-1] == "batch batch_fake0001: in_progress, 0/5 completed, 0 failed"
    fake.release()
    results = _run(CHUNKS, cfg, prompts, tmp_path / "cache")
    assert all(r.status == "coded" and r.batch_id == "batch_fake0001" for r in results)
    assert len(fake.batches) == 1 and set(fake.custom_ids_seen.values()) == {1}


def test_invalid_answers_are_reasked_in_the_next_round_or_in_real_time(fake, prompts, tmp_path):
    def invalid_first(body):  # a re-ask carries the answer and the error after the system and user messages
        reask = len(body["messages"]) > 2
        return _quote_the_passage({**body, "messages": body["messages"][:2]}) if reask else "this is not json {"

    fake.answer_fn = invalid_first
    results = _run(CHUNKS[:2], _cfg(fake), prompts, tmp_path / "a" / "cache")
    assert all(r.status == "coded" and r.reasks == 1 for r in results)
    assert len(fake.batches) == 2 and fake.count() == 0  # the re-asks were the second batch
    results = _run(CHUNKS[2:4], _cfg(fake, reasks="realtime"), prompts, tmp_path / "b" / "cache")
    assert all(r.status == "coded" and r.reasks == 1 for r in results)
    assert len(fake.batches) == 3 and fake.count() == 2  # the re-asks went one at a time


JOB = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[4] + "/tests")
    from conftest import nurse_chunk
    from qualcode import logs
    from qualcode.coding import prompts as P
    from qualcode.coding.cache import AnswerCache
    from qualcode.coding.coder import code_chunks, request_keys
    from qualcode.config import LLMConfig
    from qualcode.inputs import codebook

    base_url, cache_dir, journal, repo = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    with logs.job(None):
        cb = codebook.load(repo / "tests/data/codebook.yaml")
        prompts = P.load(repo / "config/prompts/system.j2", repo / "config/prompts/user.j2", cb, "json_schema")
        cfg = LLMConfig(provider="openai", base_url=base_url, model="fake", structured_output="json_schema",
                        api_key_env="QUALCODE_TEST_KEY", mode="batch", batch={"poll_s": 0.05})
        with AnswerCache(cache_dir) as cache:
            code_chunks([nurse_chunk(i) for i in range(5)], cfg, prompts, cache, journal=journal)
    """
)


def test_a_run_killed_while_its_batch_is_in_flight_takes_its_answers_and_submits_nothing_twice(
    fake, prompts, codebook, tmp_path
):
    fake.plans = [Plan(hold=True)]
    cache_dir, journal = tmp_path / "cache", tmp_path / "journal" / "job.jsonl"
    script = tmp_path / "job.py"
    script.write_text(JOB)
    env = {**os.environ, "QUALCODE_TEST_KEY": KEY}
    args = [sys.executable, str(script), fake.base_url, str(cache_dir), str(journal), str(REPO)]
    job = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (fake.batches and fake.looks >= 3) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.poll() is None, job.stdout.read()
        assert list((cache_dir / "batches").glob("*.json")), "the batch was recorded before the wait"
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    [batch_id] = fake.batches

    # a run that must not wait says which batch is running, and sends nothing
    with pytest.raises(BatchPending, match=rf"{batch_id}.*still in_progress, 0/5"):
        _run(CHUNKS, _cfg(fake, running="exit"), prompts, cache_dir)
    fake.release()
    results = _run(CHUNKS, _cfg(fake), prompts, cache_dir)
    assert all(r.status == "coded" and r.batch_id == batch_id for r in results)
    assert len(fake.batches) == 1 and set(fake.custom_ids_seen.values()) == {1} and fake.count() == 0


RUNNER = textwrap.dedent(
    """
    # plays vLLM's batch runner: python runner.py -i requests.jsonl -o answers.jsonl
    import json, sys
    sys.path.insert(0, sys.argv[5])
    from batchfake import BatchFake
    from conftest import _quote_the_passage
    fake = BatchFake()
    fake.answer_fn = _quote_the_passage
    with open(sys.argv[2]) as inp, open(sys.argv[4], "w") as out:
        for i, raw in enumerate(inp):
            line = json.loads(raw)
            assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
            response = {"status_code": 200, "request_id": f"vllm-{i}", "body": fake.chat_payload(line["body"], i)}
            out.write(json.dumps({"id": f"vllm-{i}", "custom_id": line["custom_id"], "response": response,
                                  "error": None}) + "\\n")
    """
)


def test_batch_files_round_trip_through_a_runner_like_vllms(fake, codebook, prompts, tmp_path):
    realtime = _run(CHUNKS, _cfg(fake, "realtime"), prompts, tmp_path / "rt" / "cache")
    cfg = _cfg(fake, "batch_files", files_dir=str(tmp_path / "files"))
    with pytest.raises(
        BatchPending, match=r"5 request\(s\) wait.*run `python -m vllm\.entrypoints\.openai\.run_batch"
    ) as e:
        _run(CHUNKS, cfg, prompts, tmp_path / "b" / "cache")
    command = str(e.value).split("`")[1].split()
    assert command[:3] == ["python", "-m", "vllm.entrypoints.openai.run_batch"] and command[-2:] == ["--model", "fake"]
    requests, answers = command[command.index("-i") + 1], command[command.index("-o") + 1]
    lines = [json.loads(x) for x in Path(requests).read_text().splitlines()]
    assert sorted(_canonical(x["body"]) for x in lines) == sorted(map(_canonical, fake.requests))
    # a second run before the answers exist writes nothing new and names the same command
    with pytest.raises(BatchPending, match=requests):
        _run(CHUNKS, cfg, prompts, tmp_path / "b" / "cache")
    assert len(list((tmp_path / "files").iterdir())) == 1
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    subprocess.run([sys.executable, str(runner), "-i", requests, "-o", answers, str(REPO / "tests")], check=True)
    results = _run(CHUNKS, cfg, prompts, tmp_path / "b" / "cache")
    assert all(r.status == "coded" for r in results) and len(fake.batches) == 0
    assert _table_bytes(codebook, CHUNKS, results) == _table_bytes(codebook, CHUNKS, realtime)
    assert {r.batch_id for r in results} == {Path(requests).name.split(".")[0]}


USER = {"role": "user", "content": "We had no masks."}


def test_the_fake_walks_a_batch_through_its_states_and_cancels_it(fake):
    import openai

    client = openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
    line = {
        "custom_id": "k1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [USER]},
    }
    uploaded = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    assert client.files.content(uploaded.id).content == json.dumps(line).encode()
    done = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    seen = [client.batches.retrieve(done.id).status for _ in range(4)]
    assert seen == ["in_progress", "finalizing", "completed", "completed"]
    [answer] = client.files.content(client.batches.retrieve(done.id).output_file_id).text.splitlines()
    assert json.loads(answer)["custom_id"] == "k1" and json.loads(answer)["response"]["status_code"] == 200
    stopped = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(stopped.id).status == "cancelling"
    after = client.batches.retrieve(stopped.id)
    assert after.status == "cancelled" and after.request_counts.total == 1
    assert fake.custom_ids_seen == {"k1": 2}


def test_error_lines_in_vllm_and_openai_shapes_are_read_as_failures():
    lines = [
        {"custom_id": "a", "response": None, "error": {"code": "x", "message": "model crashed"}},
        {"custom_id": "b", "response": {"status_code": 400, "body": {"error": {"message": "bad request"}}}},
        "not json",
    ]
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    out = parse_output(text, "batch_1")
    assert out == {"a": "batch batch_1: HTTP None: model crashed", "b": "batch batch_1: HTTP 400: bad request"}


# -- the workflow: a batch run beside a realtime run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from workflow_helpers import CODING, fake_config, run, scratch_copy

    env = {"QUALCODE_TEST_KEY": KEY}
    with BatchFake(seed=1) as server:
        server.answer_fn = _quote_the_passage
        dirs = {}
        for mode in ("realtime", "batch"):
            wd = scratch_copy(tmp_path_factory.mktemp(mode))
            # coding's transport alone: the themes' names (one realtime question per theme) are not these counts'
            cfg = fake_config(wd, server, {"mode": mode, "batch": FAST}, themes={"names": False})
            run(wd, CODING, "results/manifest.json", "--configfile", str(cfg), env=env)
            dirs[mode] = (wd, cfg)
        sent = (server.count(), len(server.batches), sum(server.custom_ids_seen.values()))
        wd, cfg = dirs["batch"]
        shutil.rmtree(wd / "results" / "work" / "shards")  # every shard is coded again, from the cache
        run(wd, CODING, "--configfile", str(cfg), env=env)
        again = (server.count(), len(server.batches), sum(server.custom_ids_seen.values()))
        yield {mode: wd for mode, (wd, _) in dirs.items()}, sent, again


@pytest.mark.e2e
def test_the_workflow_in_batch_mode_writes_the_realtime_tables_and_a_rerun_sends_nothing(two_runs):
    import pandas as pd

    dirs, sent, again = two_runs
    chunks = len(pd.read_parquet(dirs["batch"] / "results" / "chunks.parquet"))
    realtime_requests, batches, lines = sent
    assert realtime_requests == chunks and lines == chunks and batches >= 1  # a batch per shard
    assert again == sent
    for name in ("codings", "codes"):
        one, two = (dirs[m] / "results" / f"{name}.parquet" for m in ("realtime", "batch"))
        assert one.read_bytes() == two.read_bytes(), name
    calls = pd.read_parquet(dirs["batch"] / "results" / "llm_calls.parquet")
    assert calls.batch_id.notna().all() and calls.batch_id.nunique() == batches
    manifest = json.loads((dirs["batch"] / "results" / "manifest.json").read_text())
    assert manifest["requests"] == {"mode": "batch", "batch_ids_sent": sorted(set(calls.batch_id))}
    assert manifest["counts"]["batch_ids"] == sorted(set(calls.batch_id))
    assert manifest["counts"]["answers_batch"] == len(calls) and manifest["counts"]["answers_realtime"] == 0
    realtime = json.loads((dirs["realtime"] / "results" / "manifest.json").read_text())
    assert realtime["requests"] == {"mode": "realtime", "batch_ids_sent": []}
    assert realtime["counts"]["batch_ids"] == [] and realtime["counts"]["answers_batch"] == 0


@pytest.mark.parametrize(
    "settings, says",
    [
        ({"llm": {"mode": "batch"}}, "set llm.provider: openai"),
        ({"llm": {**OPENAI, "mode": "batch"}, "cluster": {"coding": "compute"}}, "cluster.coding: submit_host"),
        ({"llm": {**OPENAI, "mode": "batch_files"}, "limits": {"budget": 5}, "prices": PRICES}, "does not keep limits"),
    ],
)
def test_batch_settings_that_cannot_work_are_refused_before_any_job(settings, says):
    from pydantic import ValidationError

    from qualcode.config import Config

    with pytest.raises(ValidationError, match=says):
        Config.model_validate(settings)
    assert Config.model_validate({"llm": {**OPENAI, "mode": "batch"}, "limits": {"confirm_new_requests": 10}})


def test_the_mode_changes_neither_the_config_hash_nor_the_coding_jobs_params():
    from qualcode.config import Config, content_dict, job_llm

    realtime = Config.model_validate({"llm": OPENAI})
    batch = Config.model_validate({"llm": {**OPENAI, "mode": "batch", "batch": {"poll_s": 5, "reasks": "realtime"}}})
    assert content_dict(batch) == content_dict(realtime) and job_llm(batch.llm) == job_llm(realtime.llm)
    assert batch.coding_on_compute(cluster=True) is False
