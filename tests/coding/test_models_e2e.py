"""End to end with real models: the embedded SmolLM2 in-process, and the same GGUF behind a real
llama.cpp server on 127.0.0.1 through the openai client. Assert shapes and invariants, never the small
model's content."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from qualcode.coding.client import SMOLLM2, local_model_path

from workflow_helpers import CODING, assert_invariants, run, scratch_copy, tables, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.model]


def test_embedded_model_codes_the_example_and_reruns_from_cache(tmp_path):
    """A part of the example in five formats (md, cp1252 txt, docx, vtt, srt): the README's first command, which CI
    runs before the tests, codes the whole of it with this model."""
    wd = scratch_copy(tmp_path / "wf")
    include = ["narratives/*", "meetings/*"]
    # two coding jobs of 4 chunks, on two cores (the model runs one thread a job); one ask a chunk, as a failed
    # chunk is asked again on every rerun and re-asks are tested against the fake server
    cfg = write_config(wd, {"ingest": {"include": include}, "validation": {"gold": []}, "coding": {"shard_size": 4},
                            "llm": {"max_reasks": 0}})  # fmt: skip
    run(wd, CODING, "results/codebook/answer.schema.json", "--configfile", str(cfg))
    t = tables(wd)
    assert_invariants(t)
    calls = t["llm_calls"]
    inputs = {p.relative_to(wd / "data/raw").as_posix() for g in include for p in (wd / "data/raw").glob(g)}
    assert len({p.rsplit(".", 1)[1] for p in inputs}) >= 5
    assert set(t["documents"].source_file) == inputs  # every file of the part read
    assert (calls.provider == "local").all() and not calls.cache_hit.any()
    # a chunk whose answers all broke the codebook's rules fails, with no answer and so no model served
    assert calls.model_served[calls.status == "coded"].str.contains("@sha256:").all()
    assert (wd / "results/codebook/answer.schema.json").is_file()

    run(wd, CODING, "--configfile", str(cfg), "--forceall")
    again = tables(wd)["llm_calls"]
    coded = again.status == "coded"
    assert again.cache_hit[coded].all()  # a second run asks nothing already answered
    assert not again.cache_hit[~coded].any()  # failures are never cached


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(local_model_path(SMOLLM2)),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        "2",  # the server answers one request at a time: both cores for it
        "--n_threads_batch",
        "2",
        "--n_ctx",
        "4096",
        "--verbose",
        "False",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"llama_cpp.server did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.5)
    yield base
    proc.terminate()
    proc.wait(30)


def test_llama_cpp_server_through_the_openai_client(tmp_path, llama_server):
    wd = scratch_copy(tmp_path / "wf")
    cfg = write_config(
        wd,
        {
            "ingest": {"include": ["narratives/*.md"]},
            "validation": {"gold": []},  # the example's human codings cover documents this subset leaves out
            "llm": {
                "provider": "openai",
                "base_url": llama_server,
                "model": "smollm2",
                "structured_output": "json_object",
                "concurrency": 2,
                "max_reasks": 0,
            },
        },
    )
    run(wd, CODING, "--configfile", str(cfg))
    t = tables(wd)
    assert_invariants(t)
    calls = t["llm_calls"]
    assert (calls.provider == "openai").all() and (calls.base_url == llama_server).all()
    assert not calls.cache_hit.any()
    assert calls[calls.status == "coded"].model_served.notna().all()
    assert (calls.tokens_in > 0).all()

    run(wd, CODING, "--configfile", str(cfg), "--forceall")
    again = tables(wd)["llm_calls"]
    assert again.cache_hit[again.status == "coded"].all()
