"""`snakemake propose` end to end (issue 20): from raw texts with no codebook to a proposed codebook, then a coding
run with it, against the fake OpenAI-compatible server and with the embedded model. One shared run per server."""

from __future__ import annotations

import json
import re
import shutil

import jsonschema
import pandas as pd
import pytest
import yaml

from qualcode.induction import asking
from qualcode.inputs import codebook as codebook_mod

from conftest import REPO
from fakeserver import FakeServer, generate_instance, request_schema
from workflow_helpers import assert_invariants, fake_config, run, scratch_copy, tables, write_config

pytestmark = pytest.mark.e2e

KEY = {"QUALCODE_TEST_KEY": "sk-test-fake"}
TEXTS = {
    "nurse.txt": "We had no masks on the ward for weeks. I was scared of bringing the virus home to my kids.",
    "driver.txt": "The buses kept running. Nobody thanked the drivers, and the company gave us no masks at all.",
    "cleaner.txt": "I cleaned the wards every night. My team looked after each other when management did not.",
    "cashier.txt": "Customers shouted at us about the queues. I was exhausted and scared of catching it at the till.",
    "carer.txt": "We lost three residents in one week. The grief stayed with us, and there were never enough gloves.",
}
MORE = {
    "porter.txt": "The porters were proud of the team. We moved every patient and nobody got left behind.",
    "pharmacist.txt": "Prescriptions doubled and the shelves were empty. I felt guilty closing the door at six.",
}


def passage(body: dict) -> str:
    user = body["messages"][-1]["content"]
    return user.split('"""')[1].strip() if user.count('"""') >= 2 else user


def answer(body: dict) -> str:
    """Open coding: two candidates per passage, labelled by words of the passage, each quoting it verbatim (the
    second quote altered, so it is ungrounded); any other request: the schema's default instance."""
    schema = request_schema(body)
    if schema.get("title") != asking.OPEN_TITLE:
        return json.dumps(generate_instance(schema, body["messages"][-1]["content"]))
    text = passage(body)
    words = re.findall(r"[a-z]{5,}", text.lower())
    codes = [
        {"label": f"{words[0]} {words[1]}", "definition": f"about {words[0]}", "quote": " ".join(text.split()[:4])},
        {"label": f"{words[-1]}", "definition": f"about {words[-1]}", "quote": "words that are not there"},
    ]
    return json.dumps({"codes": codes})


def kind(body: dict) -> str:
    return request_schema(body).get("title", "coding")


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """propose; propose again; propose with two more documents; a coding run with the proposed codebook."""
    work = scratch_copy(tmp_path_factory.mktemp("induction"), data=False)
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    for name, text in TEXTS.items():
        (raw / name).write_text(text)
    with FakeServer(seed=3) as fake:
        fake.answer_fn = answer
        overrides = {"codebook": "no-codebook-yet.yaml", "induction": {"documents": None, "batch_size": 2}}
        cfg = fake_config(work, fake, **overrides)
        first = run(work, "propose", "--configfile", str(cfg), env=KEY)
        sent_first = list(fake.requests)
        first_out = work / "first-proposal"
        shutil.copytree(work / "results" / "induction", first_out)
        outputs = {p.name: p.read_bytes() for p in first_out.iterdir() if p.is_file()}
        run(work, "propose", "--forcerun", "propose_codebook", "--configfile", str(cfg), env=KEY)
        sent_rerun = fake.requests[len(sent_first) :]
        rerun_outputs = {p.name: p.read_bytes() for p in (work / "results" / "induction").iterdir() if p.is_file()}
        chunks_before = set(pd.read_parquet(work / "results/work/chunks.parquet").chunk_id)
        for name, text in MORE.items():
            (raw / name).write_text(text)
        run(work, "propose", "--configfile", str(cfg), env=KEY)
        sent_more = fake.requests[len(sent_first) + len(sent_rerun) :]
        chunks_after = pd.read_parquet(work / "results/work/chunks.parquet")
        cfg2 = fake_config(work, fake, codebook="results/induction/codebook.yaml")
        n = fake.count()
        run(work, "tables", "--configfile", str(cfg2), env=KEY)
        coded = fake.requests[n:]
    yield {
        "work": work, "first": first, "out": first_out, "sent_first": sent_first, "outputs": outputs,
        "sent_rerun": sent_rerun, "rerun_outputs": rerun_outputs, "chunks_before": chunks_before,
        "chunks_after": chunks_after, "sent_more": sent_more, "coded": coded,
    }  # fmt: skip


def test_propose_needs_no_codebook_and_asks_each_chunk_then_each_group(story):
    sent = story["sent_first"]
    opened = [b for b in sent if kind(b) == asking.OPEN_TITLE]
    named = [b for b in sent if kind(b) == asking.NAME_TITLE]
    assert len(opened) == len(story["chunks_before"]) == len(TEXTS)  # one short chunk per text
    assert sorted(passage(b) for b in opened) == sorted(TEXTS.values())
    candidates = pd.read_parquet(story["out"] / "candidates.parquet")
    # ... one naming request per group proposed (max_codes is not reached)
    assert len(named) == candidates.loc[candidates.status == "proposed", "group"].nunique() > 1
    assert len(sent) == len(opened) + len(named)


def test_outputs_validate_and_ungrounded_quotes_are_never_examples(story):
    out = story["out"]
    book = yaml.safe_load((out / "codebook.yaml").read_text())
    jsonschema.validate(book, json.loads((REPO / "schemas/codebook.schema.json").read_text()))
    cb = codebook_mod.load(out / "codebook.yaml")
    candidates = pd.read_parquet(out / "candidates.parquet")
    assert len(candidates) == 2 * len(TEXTS)
    assert (candidates.grounding == "ungrounded").sum() == len(TEXTS)  # the altered quotes, marked
    ungrounded = set(candidates.loc[~candidates.grounded, "quote"])
    grounded = set(candidates.loc[candidates.grounded, "quote"])
    values = cb.fields[0].values
    assert values and all(e in grounded and e not in ungrounded for v in values for e in v.examples)
    csv = pd.read_csv(out / "proposed_codes.csv", encoding="utf-8-sig")
    assert list(csv.code) == [v.name for v in values]
    # support: distinct chunks and documents of each code's candidates, counted here from candidates.parquet
    for r in csv.itertuples():
        rows = candidates[candidates.code == r.code]
        assert (r.chunks, r.documents) == (rows.chunk_id.nunique(), rows.doc_id.nunique())
    sat = pd.read_parquet(out / "saturation.parquet")
    assert list(sat.chunks) == [2, 4, 5] and sat.new_codes.sum() == candidates.group.nunique()
    methods = (out / "methods.md").read_text()
    assert f"{candidates.group.nunique()} codes from 5 chunks; the last 1 chunks added" in methods
    page = (out / "proposed_codes.html").read_text()
    assert all(f"id='{v.name}'" in page for v in values) and "<mark>" in page
    assert (out / "codebook.qdc").read_bytes().startswith(b"<?xml")
    assert (out / "saturation.png").stat().st_size > 0
    assert (out / "replay" / "answers.jsonl.gz").stat().st_size > 0


def test_rerun_sends_nothing_and_gives_the_same_outputs(story):
    assert story["sent_rerun"] == []
    for name in ("codebook.yaml", "proposed_codes.csv", "codebook.qdc", "methods.md"):
        assert story["rerun_outputs"][name] == story["outputs"][name], name


def test_adding_documents_sends_only_their_chunks(story):
    after = story["chunks_after"]
    new_chunks = set(after.chunk_id) - story["chunks_before"]
    opened = [passage(b) for b in story["sent_more"] if kind(b) == asking.OPEN_TITLE]
    assert sorted(opened) == sorted(after.set_index("chunk_id").loc[sorted(new_chunks), "text"])
    assert sorted(opened) == sorted(MORE.values())


def test_the_proposed_codebook_codes_the_texts(story):
    t = tables(story["work"])
    assert_invariants(t)
    assert len(story["coded"]) == len(t["chunks"])  # every chunk coded with the proposed codebook
    cb = codebook_mod.load(story["work"] / "results/induction/codebook.yaml")
    field = cb.fields[0].name
    assert field in t["codings"].columns
    assert set(t["codes"].value) <= {v.name for v in cb.fields[0].values}


@pytest.mark.model
def test_the_embedded_model_proposes_a_codebook_that_codes_the_texts(tmp_path):
    """Plumbing with the embedded SmolLM2-135M: its codes mean nothing, but they must make a valid codebook that a
    coding run takes as it is."""
    work = scratch_copy(tmp_path, data=False)
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    for name in list(TEXTS)[:3]:
        (raw / name).write_text(TEXTS[name])
    overrides = {
        "codebook": "no-codebook-yet.yaml",
        "induction": {"documents": None, "candidates_per_chunk": 2},
        "llm": {"max_tokens": 400},
        "cache_dir": str(work / "cache"),
    }
    run(work, "propose", "--configfile", str(write_config(work, overrides)))
    out = work / "results" / "induction"
    book = yaml.safe_load((out / "codebook.yaml").read_text())
    jsonschema.validate(book, json.loads((REPO / "schemas/codebook.schema.json").read_text()))
    candidates = pd.read_parquet(out / "candidates.parquet")
    grounded = set(candidates.loc[candidates.grounded, "quote"].str.strip())
    assert all(e in grounded for v in book["fields"][0]["values"] for e in v["examples"])
    overrides["codebook"] = "results/induction/codebook.yaml"
    run(work, "tables", "--configfile", str(write_config(work, overrides)))
    assert_invariants(tables(work))
