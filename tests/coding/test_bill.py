"""The bill: before the first request of a run, and in `qualcode estimate`, how many requests are cached, how many are
new and why, with their tokens and cost; `limits.confirm_new_requests` stops a run before it pays for more."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from qualcode import config
from qualcode.coding import estimate, prompts
from qualcode.coding.cache import AnswerCache
from qualcode.errors import LimitReached
from qualcode.inputs.chunking import chunk_documents
from qualcode.inputs.codebook import load as load_codebook
from qualcode.outputs import tables
from qualcode.records import CachedAnswer, Document

from workflow_helpers import CODING, REPO, fake_config, run, scratch_copy

KEY = "sk-test-FAKE-bill-key-0042"
ENV = {"QUALCODE_TEST_KEY": KEY}
WORDS = "masks shifts bus night patients fear proud tired gloves union neighbours rent kids".split()


def _survey(path, n: int) -> None:
    """n short survey answers, one chunk each."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"R{i:04d}", f"Answer {i}: " + " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(20))])


def _edit_definition(codebook_path, field: str, value: str) -> None:
    raw = yaml.safe_load(codebook_path.read_text(encoding="utf-8"))
    [f] = [f for f in raw["fields"] if f["name"] == field]
    [v] = [v for v in f["values"] if v["name"] == value]
    v["definition"] += " Also worry about it."
    codebook_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def _bill_log(wd) -> str:
    return (wd / "results/logs/bill/run.log").read_text(encoding="utf-8")


def _jobs(proc: subprocess.CompletedProcess, rule: str) -> int:
    """How many jobs of `rule` Snakemake started (its job stats table counts those planned)."""
    return len(re.findall(rf"^(?:local)?(?:rule|checkpoint) {rule}:$", proc.stdout + proc.stderr, re.MULTILINE))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One small project, run as a researcher would: a first run; a code's definition edited (stopped by the limit);
    the estimate; going on as the message says; a document added; a template edited (stopped); a second replicate
    (stopped by its own bill). Per step: the snakemake process, the bill's log, and the requests the server received
    during it."""
    from fakeserver import FakeServer

    wd = scratch_copy(tmp_path_factory.mktemp("bill") / "wf", data=False)
    _survey(wd / "data/raw/survey.csv", 12)
    out: dict[str, dict] = {}
    with FakeServer(seed=1) as server:
        # two chunks a coding job, so that a bill rerun by a new document could be seen rerunning every shard
        cfg = fake_config(wd, server, coding={"shard_size": 2})

        def step(name: str, target: str = CODING, check: bool = True) -> None:
            before = server.count()
            proc = run(wd, target, "--configfile", str(cfg), env=ENV, check=check)
            out[name] = {"proc": proc, "log": _bill_log(wd), "sent": server.count() - before}

        step("first")
        out["first"]["chunks"] = len(tables.read_chunks(wd / "results/work/chunks.parquet"))
        raw = yaml.safe_load(cfg.read_text())
        cfg.write_text(yaml.safe_dump({**raw, "limits": {"confirm_new_requests": 5}}))
        _edit_definition(wd / "config/codebook.yaml", "emotions", "fear")
        step("codebook", check=False)
        out["estimate"] = subprocess.run(
            [sys.executable, "-m", "qualcode", "estimate", "--config", "config/config.yaml", "--config", str(cfg)],
            cwd=wd, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        cfg.write_text(yaml.safe_dump({**raw, "limits": {"confirm_new_requests": out["first"]["chunks"]}}))
        step("go_on")
        cfg.write_text(yaml.safe_dump({**raw, "limits": {"confirm_new_requests": 5}}))
        _survey(wd / "data/raw/survey.csv", 13)
        step("new_document")
        user = wd / "config/prompts/user.j2"
        template = user.read_text(encoding="utf-8")
        user.write_text("Code this passage.\n" + template, encoding="utf-8")
        step("template", check=False)
        user.write_text(template, encoding="utf-8")
        cfg.write_text(yaml.safe_dump({**raw, "limits": {"confirm_new_requests": 5}, "validation": {"replicates": 2}}))
        step("replicate", target="results/stability.parquet", check=False)
        out["replicate"]["log"] = (wd / "results/logs/bill/r2.log").read_text(encoding="utf-8")
    return out


@pytest.mark.e2e
def test_the_first_run_says_every_request_is_new_before_sending(runs):
    first = runs["first"]
    n = first["chunks"]
    assert n == 12 and first["sent"] == n
    assert f"bill: requests: {n}: 0 in the cache, {n} new" in first["log"]
    assert f"bill: new because: {n}: no earlier run recorded" in first["log"]
    assert "bill: new requests cost: about " in first["log"]
    # the bill is logged before the first coding job starts
    stderr = first["proc"].stderr
    assert stderr.index("bill: requests:") < stderr.index("code_shard:")


@pytest.mark.e2e
def test_an_edited_definition_is_named_and_the_limit_stops_before_paying(runs):
    step, n = runs["codebook"], runs["first"]["chunks"]
    assert step["proc"].returncode != 0
    assert step["sent"] == 0
    assert f"bill: requests: {n}: 0 in the cache, {n} new" in step["log"]
    assert f"bill: new because: {n}: codebook changed (changed: emotions.fear)" in step["log"]
    message = f"{n} new requests (0 cached) would be sent, more than limits.confirm_new_requests (5); nothing was sent."
    assert message in step["log"]
    assert f"set limits.confirm_new_requests to {n} or more (or null) in your config file" in step["log"]
    assert _jobs(step["proc"], "code_shard") == 0


@pytest.mark.e2e
def test_estimate_prints_the_same_reasons(runs):
    n = runs["first"]["chunks"]
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in runs["estimate"].splitlines())
    assert rows["requests"] == f"{n}: 0 in the cache, {n} new"
    assert rows["new because"] == f"{n}: codebook changed (changed: emotions.fear)"
    assert rows["requests to send"] == str(n)


@pytest.mark.e2e
def test_going_on_as_the_message_says_sends_them(runs):
    step, n = runs["go_on"], runs["first"]["chunks"]
    assert step["proc"].returncode == 0 and step["sent"] == n


@pytest.mark.e2e
def test_a_new_document_is_new_text_and_reruns_only_its_shard(runs):
    step, n = runs["new_document"], runs["first"]["chunks"]
    assert step["sent"] == 1
    assert f"bill: requests: {n + 1}: {n} in the cache, 1 new" in step["log"]
    assert "bill: new because: 1: new or changed text" in step["log"]
    # the bill ran again (the chunks changed), yet only the new chunk's coding job ran
    assert _jobs(step["proc"], "bill") == 1 and _jobs(step["proc"], "code_shard") == 1


@pytest.mark.e2e
def test_an_edited_template_is_named(runs):
    step, n = runs["template"], runs["first"]["chunks"] + 1
    assert step["proc"].returncode != 0 and step["sent"] == 0
    assert f"bill: new because: {n}: prompt template changed (prompts.user)" in step["log"]


@pytest.mark.e2e
def test_a_replicate_has_a_bill_of_its_own_under_the_same_limit(runs):
    step, n = runs["replicate"], runs["first"]["chunks"] + 1
    assert step["proc"].returncode != 0 and step["sent"] == 0
    assert f"bill r2: requests: {n}: 0 in the cache, {n} new" in step["log"]
    assert f"{n} new requests (0 cached) would be sent, more than limits.confirm_new_requests (5)" in step["log"]
    assert _jobs(step["proc"], "code_variant") == 0


# -- the library, without Snakemake ------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path):
    """The example codebook and templates, copied so that a test can edit them, and four short documents."""
    for name in ("codebook.yaml", "prompts/system.j2", "prompts/user.j2"):
        (tmp_path / "config" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "config" / name).write_text((REPO / "config" / name).read_text(encoding="utf-8"))
    templates = {name: str(tmp_path / f"config/prompts/{name}.j2") for name in ("system", "user")}
    llm = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "structured_output": "json_schema"}
    cfg = config.Config.model_validate({
        "codebook": str(tmp_path / "config/codebook.yaml"), "prompts": templates, "llm": llm,
        "prices": {"m": {"input": 1.0, "output": 2.0}}, "cache_dir": str(tmp_path / "cache"),
    })  # fmt: skip
    docs = [Document(f"d{i}", "s.csv", "csv", "utf-8", f"Text {i}: {' '.join(WORDS[i:])}") for i in range(4)]
    return cfg, docs


def _bill(cfg, docs, previous):
    chunks = chunk_documents(docs, cfg.chunking, [])
    templates = prompts.load(cfg.prompts["system"], cfg.prompts["user"], load_codebook(cfg.codebook), "json_schema")
    with AnswerCache(cfg.cache_dir) as cache:
        return estimate.bill(cfg, chunks, templates, cache, previous), chunks, templates


def _answer_all(cfg, chunks, templates) -> None:
    from qualcode.coding.coder import Requests

    build = Requests(cfg.llm, templates)
    with AnswerCache(cfg.cache_dir) as cache:
        for c in chunks:
            cache.put(build(c).key(), CachedAnswer(answer={}, raw="{}", tokens_out=30, attempts=1))


def test_bill_says_why_each_new_request_is_new(project):
    cfg, docs = project
    first, chunks, templates = _bill(cfg, docs, None)
    assert (first["cached"], first["new"]) == (0, len(chunks))
    assert first["why_new"] == {estimate.NO_RECORD: len(chunks)}
    assert first["cost_expected"] > 0 and first["output_tokens_basis"] == "half of llm.max_tokens"
    _answer_all(cfg, chunks, templates)
    again, _, _ = _bill(cfg, docs, first["record"])
    assert (again["cached"], again["new"], again["why_new"]) == (len(chunks), 0, {})
    assert again["output_tokens_basis"] == "median of cached answers" and again["output_tokens_per_answer"] == 30
    # one more document, a definition edited and a code added: the new document is new text, the rest the codebook
    path = Path(cfg.codebook)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["fields"][0]["values"][1]["definition"] = "Sorrow."
    raw["fields"][0]["values"].append({"name": "relief", "definition": "Relief."})
    raw["version"] = "1.1"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    more = [*docs, Document("d9", "s.csv", "csv", "utf-8", "Something else entirely.")]
    edited, more_chunks, _ = _bill(cfg, more, first["record"])
    field, grief = raw["fields"][0]["name"], raw["fields"][0]["values"][1]["name"]
    assert edited["why_new"] == {
        f"codebook changed (changed: its name, version or description, {field}.{grief}; added: {field}.relief)": len(
            chunks
        ),
        estimate.NEW_TEXT: len(more_chunks) - len(chunks),
    }


def test_bill_names_model_settings_and_unanswered_requests(project):
    cfg, docs = project
    first, chunks, _ = _bill(cfg, docs, None)
    same, _, _ = _bill(cfg, docs, first["record"])
    assert same["why_new"] == {estimate.NOT_KEPT: len(chunks)}  # nothing was answered since
    other = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"model": "m2", "temperature": 0.5})})
    changed, _, _ = _bill(other, docs, first["record"])
    assert changed["why_new"] == {
        "model changed (m at http://127.0.0.1:9/v1 -> m2 at http://127.0.0.1:9/v1); "
        "generation settings changed (llm.temperature)": len(chunks)
    }


def test_confirm_stops_above_the_limit_only(project):
    cfg, docs = project
    b, chunks, _ = _bill(cfg, docs, None)
    estimate.confirm(b, None)
    estimate.confirm(b, len(chunks))
    with pytest.raises(LimitReached, match=rf"{len(chunks)} new requests \(0 cached\) would be sent, more than "):
        estimate.confirm(b, len(chunks) - 1)


def test_going_on_past_the_limit_keeps_the_config_hash():
    base = config.Config()
    consented = config.Config.model_validate({"limits": {"confirm_new_requests": 7}})
    assert config.content_dict(consented) == config.content_dict(base)
    assert "confirm_new_requests" not in config.content_dict(base)["limits"]


@pytest.mark.e2e
def test_a_run_stopped_after_its_bill_leaves_no_shard_coded_with_the_old_settings(tmp_path, fake_server):
    """A model changed, the bill run, then the run stopped before the coding jobs (a kill, a quota): the next run must
    code every shard with the new model. The coding jobs wait for the bill, a checkpoint, and Snakemake then reruns
    them only for missing outputs, not for changed params: the bill removes the outputs made with other settings."""
    wd = scratch_copy(tmp_path / "wf", data=False)
    _survey(wd / "data/raw/survey.csv", 6)
    cfg = fake_config(wd, fake_server, llm={"model": "old-model"}, coding={"shard_size": 2})
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    cfg = fake_config(wd, fake_server, llm={"model": "new-model"}, coding={"shard_size": 2})
    run(wd, "results/work/bill/run.json", "--configfile", str(cfg), env=ENV)  # stopped after the bill
    run(wd, CODING, "--configfile", str(cfg), env=ENV)
    calls = pd.read_parquet(wd / "results/llm_calls.parquet")
    assert len(calls) == 6 and set(calls.model_asked) == {"new-model"}, calls.model_asked.value_counts().to_dict()
