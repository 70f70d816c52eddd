"""Provenance: identical inputs and cache give byte-identical coding tables; the replay archive
rebuilds them with no model, no network and no key; the manifest and methods hold what a paper needs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from packaging.utils import canonicalize_name

from qualcode import config
from qualcode.outputs.provenance import git_state

from workflow_helpers import CODING, fake_config, naming_keys, run, scratch_copy, tables

KEY = "sk-test-FAKE-provenance-key-77"
CODING_TABLES = ("documents", "chunks", "codings", "codes", "failures")


def _sha(workdir: Path) -> dict[str, str]:
    return {n: hashlib.sha256((workdir / f"results/{n}.parquet").read_bytes()).hexdigest() for n in CODING_TABLES}


def _config(workdir, server, cache):
    prices = {"fake-model": {"input": 0.15, "output": 0.60}}
    return fake_config(workdir, server, {"max_reasks": 0}, cache, prices=prices)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One whole run with one failed chunk, shared by the tests that read it: its folder, config and server."""
    from conftest import _quote_the_passage
    from fakeserver import FakeServer, Fault

    tmp = tmp_path_factory.mktemp("provenance")
    wd = scratch_copy(tmp / "first")
    with FakeServer(seed=1) as server:
        server.answer_fn = _quote_the_passage
        cfg = _config(wd, server, tmp / "cache1")
        server.script = [Fault("schema_invalid")]  # one failure, so the failures table is not empty
        run(wd, "--configfile", str(cfg), "--cores", "1", env={"QUALCODE_TEST_KEY": KEY})
        yield wd, cfg, server


@pytest.mark.e2e
def test_deleting_results_and_rerunning_gives_identical_tables(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "wf")
    cfg = _config(wd, fake_server, tmp_path / "cache")
    run(wd, CODING, "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": KEY})
    before, sent = _sha(wd), fake_server.count()
    shutil.rmtree(wd / "results")
    run(wd, CODING, "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": KEY})
    assert _sha(wd) == before
    assert fake_server.count() == sent


@pytest.mark.e2e
def test_replay_archive_rebuilds_identical_tables_offline(first_run, tmp_path):
    wd, _, fake_server = first_run
    first = _sha(wd)
    archive = wd / "results/replay/answers.jsonl.gz"
    n_coded = int((tables(wd)["codings"].status == "coded").sum())
    named = naming_keys(wd)  # the themes' naming questions (themes.names) join the archive
    assert named and sum(1 for _ in __import__("gzip").open(archive)) == n_coded + len(named)  # failures are not

    # a reviewer: fresh directory, empty cache, the server gone, no key
    fake_server.stop()
    fake_server.fault_rates = {}
    fake_server.script = []
    fresh = scratch_copy(tmp_path / "reviewer")
    cfg = _config(fresh, fake_server, tmp_path / "cache2")
    shutil.copy(archive, fresh / "answers.jsonl.gz")
    imp = subprocess.run(
        [sys.executable, "-m", "qualcode", "import-archive", "answers.jsonl.gz", "--config", str(cfg)],
        cwd=fresh,
        capture_output=True,
        text=True,
    )
    assert imp.returncode == 0, imp.stderr
    run(fresh, CODING, "--configfile", str(cfg), "--cores", "1")
    replayed = _sha(fresh)
    # the chunk that failed first time cannot be answered offline: it fails again, for a new reason
    assert {k: v for k, v in replayed.items() if k != "failures"} == {k: v for k, v in first.items() if k != "failures"}
    calls = tables(fresh)["llm_calls"]
    assert calls.cache_hit.sum() == n_coded
    failures = tables(fresh)["failures"]
    assert len(failures) == 1 and "cannot reach" in failures.reason.iloc[0]


@pytest.mark.e2e
def test_replay_of_a_clean_run_is_byte_identical(tmp_path, fake_server):
    wd = scratch_copy(tmp_path / "clean")
    cfg = _config(wd, fake_server, tmp_path / "cacheA")
    run(wd, CODING, "results/replay/answers.jsonl.gz", "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": KEY})
    first = _sha(wd)
    fake_server.stop()
    fresh = scratch_copy(tmp_path / "clean-reviewer")
    cfg2 = _config(fresh, fake_server, tmp_path / "cacheB")
    imp = subprocess.run(
        [
            sys.executable,
            "-m",
            "qualcode",
            "import-archive",
            str(wd / "results/replay/answers.jsonl.gz"),
            "--cache-dir",
            str(tmp_path / "cacheB"),
        ],
        capture_output=True,
        text=True,
    )
    assert imp.returncode == 0, imp.stderr
    run(fresh, CODING, "--configfile", str(cfg2))
    assert _sha(fresh) == first
    assert tables(fresh)["llm_calls"].cache_hit.all()


def test_tampered_archive_is_refused(tmp_path):
    import gzip

    from qualcode.coding.archive import import_
    from qualcode.coding.cache import AnswerCache
    from qualcode.errors import ConfigError

    entry = {
        "request_hash": "0" * 64,
        "request": {
            "provider": "openai",
            "base_url": "u",
            "model": "m",
            "messages": [],
            "temperature": 0,
            "top_p": 1,
            "max_tokens": 1,
            "seed": None,
            "response_format": None,
        },
        "response": {
            "answer": {},
            "raw": "{}",
            "model_served": None,
            "system_fingerprint": None,
            "finish_reason": None,
            "tokens_in": 1,
            "tokens_out": 1,
            "latency_s": 0.1,
            "attempts": 1,
            "reasks": 0,
        },
    }
    path = tmp_path / "a.jsonl.gz"
    path.write_bytes(gzip.compress((json.dumps(entry) + "\n").encode()))
    with AnswerCache(tmp_path / "c") as c, pytest.raises(ConfigError, match="does not match its hash"):
        import_(path, c)


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.e2e
def test_manifest_and_methods_hold_every_item(first_run, monkeypatch):
    wd, cfg, _ = first_run
    m = json.loads((wd / "results/manifest.json").read_text())
    assert set(m["run"]) == {"id", "started_at", "finished_at"} and m["run"]["started_at"]
    # the config the run resolved from the shipped file and the test's override, whatever they hold
    shipped, override = (yaml.safe_load(p.read_text()) for p in (wd / "config/config.yaml", cfg))
    monkeypatch.chdir(wd)
    # llm.api_key_env is recorded only when it names a variable set in the run's environment (issue 18 item 4)
    monkeypatch.setenv("QUALCODE_TEST_KEY", KEY)
    assert m["config"] == config.load(wd / "config/config.yaml", cfg).model_dump(mode="json")
    assert m["config"]["llm"]["model"] == override["llm"]["model"]
    assert {k: m["config"]["chunking"][k] for k in shipped["chunking"]} == shipped["chunking"]
    sha = m["sha256"]
    assert set(sha) == {"config_files", "codebook", "prompts", "answer_schema", "inputs", "outputs"}
    assert set(sha["prompts"]) == {"system", "user"}
    assert len(sha["inputs"]) == len(list((wd / "data/raw").rglob("*.*")))
    assert set(sha["outputs"]) >= {"documents", "chunks", "codings", "codes", "llm_calls", "failures"}
    assert any(p.endswith("config.yaml") for p in sha["config_files"])
    software = m["software"]
    # what the methods text cites (qualcode, Snakemake), and what shapes the answers: the API client, the embedded
    # model's runtime, the tokenizer that cuts the chunks
    assert {"python", "platform", "qualcode", "snakemake", "openai", "llama-cpp-python", "tiktoken"} <= set(software)
    assert software["python"] == platform.python_version()  # the jobs ran with this interpreter
    for package, version in software.items():
        if package not in ("python", "platform"):
            assert version == _installed(package), package  # the version installed, None when it is not
    env = m["environment"]  # the exact environment: the lock's hash and every installed distribution
    assert env["lock_file"] == "uv.lock"
    assert env["lock_sha256"] == hashlib.sha256((wd / "uv.lock").read_bytes()).hexdigest()
    assert {canonicalize_name(d.metadata["Name"]) for d in importlib.metadata.distributions()} <= set(env["packages"])
    assert env["packages"]["pyarrow"] == _installed("pyarrow")
    locked: dict[str, set] = {}  # a name may be locked at one version per Python range
    for p in tomllib.loads((wd / "uv.lock").read_text())["package"]:
        locked.setdefault(p["name"], set()).add(p.get("version"))
    for name, pair in env["differs_from_lock"].items():  # empty after `uv sync --frozen`
        assert pair["installed"] == env["packages"][name] and set(pair["locked"]) == locked[name]
        assert pair["installed"] not in locked[name]
    if "UV" in os.environ:  # under `uv run`: the environment is the lock's
        assert env["differs_from_lock"] == {}
    # the scratch copy is not inside a git checkout: no commit to record
    assert subprocess.run(["git", "-C", str(wd), "rev-parse"], capture_output=True).returncode != 0
    assert m["workflow"] is None
    model = m["model"]
    assert model["base_url"][0].startswith("http://127.0.0.1") and model["models_served"] == ["fake-model-1"]
    assert model["system_fingerprints"] == ["fp_fake"] and model["first_answer_at"]
    llm_set, default = {**shipped["llm"], **override["llm"]}, config.LLMConfig()  # as the two files set it
    sampling = ("temperature", "top_p", "max_tokens", "seed")
    assert m["sampling"] == {k: llm_set.get(k, getattr(default, k)) for k in sampling}
    assert m["chunking"]["encoding"] == shipped["chunking"]["encoding"]
    c = m["counts"]
    assert c["chunks_failed"] == 1 and c["chunks_coded"] == c["chunks"] - 1
    assert c["requests_sent"] == c["chunks"] and c["cache_hits"] == 0
    assert c["quotes_ungrounded"] + c["quotes_grounded"] == c["quotes"] > 0
    assert c["tokens_in"] > 0 and c["cost"] > 0
    assert KEY not in (wd / "results/manifest.json").read_text()

    methods = (wd / "results/methods.md").read_text()
    assert "Texts were coded with the language model fake-model" in methods
    assert f"{c['chunks_coded']} of {c['chunks']} chunks were coded" in methods
    assert "1 chunk(s) could not be coded" in methods
    assert m["origin"]["qualcode.config_sha256"] in methods
    assert "{{ text }}" in methods and "Essential workers during COVID-19" in methods  # appendix
    assert f"SHA-256 `{env['lock_sha256']}`" in methods and "uv sync --frozen" in methods

    meta = pq.read_schema(wd / "results/codings.parquet").metadata
    for k, v in m["origin"].items():
        assert meta[k.encode()] == v.encode()

    csv = (wd / "results/codings.csv").read_text(encoding="utf-8-sig")
    assert csv.splitlines()[0].startswith("doc_id,chunk_id,chunk_index,status")
    assert "emotions__fear" in csv.splitlines()[0]


def _git(repo: Path, *args: str) -> str:
    identity = ("-c", "user.name=Test", "-c", "user.email=test@example.org")
    return subprocess.run(
        ["git", "-C", str(repo), *identity, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_git_state_is_the_commit_and_whether_tracked_files_changed(tmp_path):
    assert subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode != 0
    assert git_state(tmp_path) is None  # not a git checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "Snakefile").write_text("rule all:\n")
    _git(repo, "add", "Snakefile")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == {"commit": head, "uncommitted_changes": False}
    (repo / "notes.txt").write_text("not tracked")
    assert git_state(repo) == {"commit": head, "uncommitted_changes": False}  # untracked files do not count
    (repo / "Snakefile").write_text("rule all:\n    default_target: True\n")
    assert git_state(repo) == {"commit": head, "uncommitted_changes": True}
