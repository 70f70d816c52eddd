"""The real workflow through real Snakemake, against the protocol-level fake server: what is sent,
what is cached, and what reruns cost."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from qualcode.inputs import codebook
from qualcode.outputs import tables as tables_mod

from workflow_helpers import CODING, TABLES, assert_invariants, fake_config, naming_keys, run, scratch_copy, tables

pytestmark = pytest.mark.e2e

KEY = "sk-test-FAKE-key-0123456789abcdef"


@pytest.fixture
def workdir(tmp_path):
    return scratch_copy(tmp_path / "wf")


def _config(workdir, server, **llm):
    return fake_config(workdir, server, llm)


def test_pipeline_codes_every_chunk_and_reruns_for_free(workdir, fake_server):
    cfg = _config(workdir, fake_server)
    env = {"QUALCODE_TEST_KEY": KEY}
    run(workdir, "--configfile", str(cfg), env=env)
    t = tables(workdir)
    assert_invariants(t)
    n_chunks = len(t["chunks"])
    named = naming_keys(workdir)  # the default run names each theme too (themes.names): one question per theme
    assert len(named) == len(pd.read_parquet(workdir / "results/themes.parquet")) > 0
    assert fake_server.count() == n_chunks + len(named)
    assert (t["codings"].status == "coded").all()
    assert t["codes"].grounded.any()  # the fake quotes the passage's first words
    assert not t["llm_calls"].cache_hit.any()
    inputs = [p for p in (workdir / "data/raw").rglob("*") if p.is_file()]
    assert set(t["documents"].format) == {p.suffix.lstrip(".") for p in inputs}  # every format of the examples

    run(workdir, CODING, "--configfile", str(cfg), "--forceall", env=env)
    assert fake_server.count() == n_chunks + len(named)  # nothing sent again
    assert tables(workdir)["llm_calls"].cache_hit.all()

    # a new document sends only its own chunks
    (workdir / "data/raw/new_interview.txt").write_text(
        "Interviewer: How were the night shifts?\n\nR: Long. We ran out of gowns twice and nobody came to help.\n"
    )
    run(workdir, CODING, "--configfile", str(cfg), env=env)
    t2 = tables(workdir)
    new = t2["chunks"][t2["chunks"].doc_id == "new_interview.txt"]
    assert len(new) == 1
    assert fake_server.count() == n_chunks + len(named) + 1
    assert set(t["chunks"].chunk_id) <= set(t2["chunks"].chunk_id)  # other ids unchanged

    # another model re-sends everything
    cfg2 = _config(workdir, fake_server, model="fake-model-2")
    run(workdir, CODING, "--configfile", str(cfg2), env=env)
    assert fake_server.count() == 2 * n_chunks + 2 + len(named)


def test_codebook_edit_resends_and_failures_are_kept(workdir, fake_server):
    from fakeserver import Fault

    cfg = _config(workdir, fake_server, max_reasks=1, concurrency=1)
    env = {"QUALCODE_TEST_KEY": KEY}
    # the first chunk's answers are invalid twice (one ask + one re-ask): it must land in failures
    fake_server.script = [Fault("invalid_json"), Fault("schema_invalid")]
    run(workdir, CODING, "--configfile", str(cfg), "--cores", "1", env=env)
    t = tables(workdir)
    assert_invariants(t)
    n_chunks = len(t["chunks"])
    assert fake_server.count() == n_chunks + 1
    failures = t["failures"][t["failures"].stage == "coding"]
    assert len(failures) == 1 and failures.raw_answer.iloc[0] == '{"unexpected": 1}'
    assert "does not match the schema" in failures.reason.iloc[0]

    # the failure was not cached: a rerun asks for that chunk alone
    run(workdir, CODING, "--configfile", str(cfg), "--forceall", env=env)
    assert fake_server.count() == n_chunks + 2
    assert (tables(workdir)["codings"].status == "coded").all()

    # editing one definition changes the prompt of every chunk
    cb = workdir / "config/codebook.yaml"
    cb.write_text(cb.read_text().replace("values:", "values:", 1).replace("definition:", "definition: Clearly,", 1))
    run(workdir, CODING, "--configfile", str(cfg), env=env)
    assert fake_server.count() == 2 * n_chunks + 2


def test_results_never_hold_the_key(workdir, fake_server):
    cfg = _config(workdir, fake_server)
    run(workdir, "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": KEY})
    assert fake_server.headers[0]["authorization"] == f"Bearer {KEY}"
    for root in ("results", "cache", ".snakemake"):
        for path in (workdir / root).rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path


def test_tables_keep_their_types_when_empty(workdir, fake_server):
    # every answer invalid: codes is empty but typed
    fake_server.fault_rates = {"schema_invalid": 1.0}
    cfg = _config(workdir, fake_server, max_reasks=0)
    run(workdir, "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": KEY})
    t = tables(workdir)
    assert len(t["codes"]) == 0 and list(t["codes"].columns)[:3] == ["doc_id", "chunk_id", "chunk_index"]
    assert (t["codings"].status == "failed").all()
    assert len(t["failures"]) == len(t["chunks"])
    # every column has the type the table registry gives it, empty or not
    cb = codebook.load(workdir / "config/codebook.yaml")
    for name in TABLES:
        written = pq.read_schema(workdir / f"results/{name}.parquet")
        for field in tables_mod.schema(name, cb):
            assert written.field(field.name).type == field.type, f"{name}.{field.name}"
    assert t["codes"].grounded.dtype == bool and t["codes"].quote_start.dtype == "int64"
