"""What a server sends that the client did not expect (issue 18, items 1 and 14; issue 25, item 3): text no writer
can encode, content in parts or null, a decompression bomb, a huge header. Each ends as a coded or a failed row
whose reason says what happened, never a crash; the real openai client against the fake server on 127.0.0.1.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from qualcode.coding.cache import AnswerCache
from qualcode.coding.coder import code_chunks
from qualcode.coding.validate import AnswerValidator
from qualcode.config import ConfigError, IngestConfig, LLMConfig, resolve
from qualcode.inputs.ingest import ingest
from qualcode.records import Completion

from conftest import nurse_chunk
from fakeserver import Fault, generate_instance, request_schema

MIB = 1024 * 1024


@pytest.fixture
def llm(fake_server):
    def make(**over) -> LLMConfig:
        base = dict(
            provider="openai", base_url=fake_server.base_url, model="fake", structured_output="json_schema",
            retry_initial_s=0.01, retry_max_s=0.05, concurrency=1,
        )  # fmt: skip
        return LLMConfig(**{**base, **over})

    return make


def _code(cfg, prompts, cache_dir, chunks, journal=None):
    with AnswerCache(cache_dir) as cache:
        return code_chunks(chunks, cfg, prompts, cache, journal=journal)


def _encodes(row) -> None:
    for value in row.model_dump().values():
        if isinstance(value, str):
            value.encode("utf-8")  # what Parquet, the cache, the journal and every text file do


# -- A. text that cannot be encoded ------------------------------------------------------------------------------


def test_lone_surrogates_from_the_server_are_replaced_and_the_answer_kept(llm, prompts, fake_server, tmp_path):
    """Before: UnicodeEncodeError in the journal, the job stopped ('unexpected UnicodeEncodeError'), on every rerun."""
    fake_server.script = [Fault("lone_surrogate")]
    journal = tmp_path / "journals" / "shard.jsonl"
    [r] = _code(llm(), prompts, tmp_path / "cache", [nurse_chunk(1)], journal=journal)
    assert r.status == "coded", r.error
    _encodes(r)
    assert r.model_served == "fake-model-1\ufffd" and r.system_fingerprint == "fp_fake\ufffd"
    quotes = [v["quote"] for v in json.loads(r.answer_json).values() if "quote" in v]
    assert quotes and all(q.endswith("\ufffd") for q in quotes)
    [again] = _code(llm(), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert again.cache_hit and again.answer_json == r.answer_json and fake_server.count() == 1


def test_an_escaped_lone_surrogate_inside_the_answer_json_is_replaced(llm, prompts, fake_server, tmp_path):
    """The content is plain ASCII (`\\udc80` escapes in the model's JSON); parsing it gives the lone surrogate."""

    def answer(body):
        doc = generate_instance(request_schema(body), "We had no masks")
        doc["summary"]["value"] = "fear\udc80"
        return json.dumps(doc)  # ensure_ascii: the text `"fear\\udc80"`

    fake_server.answer_fn = answer
    [r] = _code(llm(), prompts, tmp_path / "cache", [nurse_chunk(1)], journal=tmp_path / "j" / "shard.jsonl")
    assert r.status == "coded", r.error
    _encodes(r)
    assert json.loads(r.answer_json)["summary"]["value"] == "fear\ufffd"


def test_the_validator_replaces_surrogates_in_values_and_a_bad_key_is_reasked(codebook):
    validate = AnswerValidator(codebook.answer_schema(), codebook.answer_model())
    doc = generate_instance(codebook.answer_schema(), "We had no masks")
    doc["summary"]["value"] = "\ud83d half an emoji"
    assert validate(json.dumps(doc))["summary"]["value"] == "\ufffd half an emoji"
    doc["summary"] = {"value\udfff": "x"}
    with pytest.raises(Exception, match="does not match the schema"):  # an AnswerError: re-asked, not a crash
        validate(json.dumps(doc))


def test_every_string_of_a_completion_is_encodable():
    from qualcode.records import encodable

    done = Completion("a\udc80", "m\ud800", "stop\udc80", 1, 1, "fp\udfff", refusal="no\udc80")
    assert (done.content, done.model_served, done.finish_reason, done.system_fingerprint, done.refusal) == (
        "a\ufffd", "m\ufffd", "stop\ufffd", "fp\ufffd", "no\ufffd",
    )  # fmt: skip
    assert encodable("plain text, é and 😀") == "plain text, é and 😀"


def test_a_server_error_message_with_a_lone_surrogate_becomes_a_failure_reason(llm, prompts, fake_server, tmp_path):
    fake_server.script = [Fault("error_object", message="overloaded \udc80")]
    [r] = _code(llm(max_attempts=1), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "failed" and "overloaded \ufffd" in r.error
    _encodes(r)


def test_a_metadata_value_with_a_lone_surrogate_is_a_failure_row_not_a_crash(tmp_path):
    """Documents, metadata and headers are participants' words: refused with the reason, never altered."""
    (tmp_path / "rows.jsonl").write_text(
        '{"id": "a", "text": "We had no masks.", "ward": "4\\udc80"}\n', encoding="utf-8"
    )
    (tmp_path / "ok.txt").write_text("We had no masks.", encoding="utf-8")
    docs, problems = ingest(sorted(tmp_path.iterdir()), tmp_path, IngestConfig())
    assert [d.source_file for d in docs] == ["ok.txt"]
    assert [p.source_file for p in problems] == ["rows.jsonl"] and "not valid Unicode" in problems[0].problem


# -- B. answers in shapes the client did not expect; a bound on a response's size ------------------------------


def test_content_sent_as_a_list_of_parts_is_read(llm, prompts, fake_server, tmp_path):
    """Before: AttributeError: 'list' object has no attribute 'strip', and the job stopped."""
    fake_server.script = [Fault("content_parts")]
    [r] = _code(llm(), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "coded" and r.reasks == 0 and fake_server.count() == 1


def test_a_decompression_bomb_is_cut_off_at_max_response_bytes(llm, prompts, fake_server, tmp_path):
    """Before: the 50 MiB body was read whole (3.3-6.8 GB and a MemoryError for gigabytes), with an empty reason."""
    fake_server.bomb_bytes = 50 * MIB
    fake_server.script = [Fault("gzip_bomb")]
    tracemalloc.start()
    try:
        [r] = _code(llm(max_response_bytes=MIB), prompts, tmp_path / "cache", [nurse_chunk(1)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status == "failed" and fake_server.count() == 1  # not sent again: it would be paid for again
    assert "llm.max_response_bytes (1,048,576 bytes)" in r.error
    assert peak < 8 * MIB  # read in steps and stopped at the bound, never the 50 MiB


def test_a_gzip_response_within_the_bound_is_read(llm, prompts, fake_server, tmp_path):
    fake_server.bomb_bytes = MIB // 2
    fake_server.script = [Fault("gzip_bomb")]
    [r] = _code(llm(max_response_bytes=MIB), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "coded", r.error


@pytest.mark.parametrize("value", [0, 1000, 2 * 1024**3])
def test_max_response_bytes_is_bounded(value):
    with pytest.raises(ConfigError, match="max_response_bytes"):
        resolve({"llm": {"max_response_bytes": value}})


# -- C. reasons that say what happened ---------------------------------------------------------------------------


def test_a_huge_response_header_is_not_called_unreachable(llm, prompts, fake_server, tmp_path):
    """Before: 'cannot reach http://127.0.0.1:.../v1 (llm.base_url) after 1 attempts: APIConnectionError'."""
    fake_server.script = [Fault("huge_header")]
    [r] = _code(llm(max_attempts=1), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "failed" and "cannot reach" not in r.error
    assert "headers too large" in r.error and "llm.base_url" in r.error


def test_a_null_content_says_null(llm, prompts, fake_server, tmp_path):
    """Before: 'not valid JSON: Expecting value at character 0'."""
    fake_server.script = [Fault("content_null")]
    [r] = _code(llm(max_reasks=0), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "failed" and "message.content was null" in r.error and r.raw is None


def test_a_null_content_is_reasked(llm, prompts, fake_server, tmp_path):
    fake_server.script = [Fault("content_null")]
    [r] = _code(llm(max_reasks=1), prompts, tmp_path / "cache", [nurse_chunk(1)])
    assert r.status == "coded" and r.reasks == 1 and fake_server.count() == 2


# -- end to end: one run of the coding tables against a server sending all of it --------------------------------


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """The example corpus coded by a server that sends lone surrogates, content parts and gzip bombs (drawn per
    request under a fixed seed), up to the `tables` target."""
    from conftest import _quote_the_passage
    from fakeserver import FakeServer
    from workflow_helpers import CODING, fake_config, run, scratch_copy, tables

    wd = scratch_copy(tmp_path_factory.mktemp("odd") / "wf")
    with FakeServer(seed=3) as server:
        server.answer_fn = _quote_the_passage
        server.fault_rates = {"lone_surrogate": 0.4, "content_parts": 0.3, "gzip_bomb": 0.1}
        cfg = fake_config(wd, server, llm={"max_response_bytes": MIB, "max_attempts": 1})
        run(wd, CODING, "--configfile", str(cfg), env={"QUALCODE_TEST_KEY": "sk-odd-run-not-a-real-key"})
        outcomes = [kind for _, kind in server.outcomes]
    return tables(wd), outcomes


@pytest.mark.e2e
def test_a_server_sending_surrogates_parts_and_bombs_gives_a_finished_run(odd_run):
    """Before: the coding jobs stopped with UnicodeEncodeError and AttributeError (exit 1)."""
    t, outcomes = odd_run
    assert {"lone_surrogate", "content_parts", "gzip_bomb"} <= set(outcomes)  # the seed draws every kind
    calls, failures = t["llm_calls"], t["failures"]
    coded = calls[calls.model_served.notna()]
    assert len(calls) == len(t["chunks"]) == len(outcomes)  # every chunk asked once, none lost
    assert (coded.model_served == "fake-model-1\ufffd").sum() == outcomes.count("lone_surrogate")
    bombs = failures[failures.reason.str.contains("llm.max_response_bytes", regex=False)]
    assert len(bombs) == outcomes.count("gzip_bomb") == len(failures)
    replaced = t["codes"][t["codes"].quote.str.contains("\ufffd", regex=False)]
    assert len(replaced) and set(replaced.grounding) == {"ungrounded"}  # written, and flagged for a person to check


@pytest.mark.parametrize("wbits", [31, 15, -15], ids=["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies_decompress_exactly_whatever_the_pieces(wbits):
    import random
    import zlib

    from qualcode.coding.api import _Inflate

    rng = random.Random(wbits)
    plain = bytes(rng.choice(b"ab ") for _ in range(300_000)) + b" " * 200_000  # past several 64 KiB steps
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
    packed = packer.compress(plain) + packer.flush()
    if wbits == 31:  # two gzip members in a row are one valid body
        packed += zlib.compress(b"tail", wbits=31)
        plain += b"tail"
    inflate = _Inflate("gzip" if wbits == 31 else "deflate")
    cuts = [0, 1, 7, 4096, len(packed) // 2, len(packed)]
    out = b"".join(piece for a, b in zip(cuts, cuts[1:], strict=False) for piece in inflate.feed(packed[a:b]))
    assert out == plain


def test_an_archive_entry_holding_a_lone_surrogate_is_refused_by_name(llm, prompts, tmp_path):
    """Before: UnicodeEncodeError out of `qualcode import` (reported as a bug in qualcode)."""
    import gzip

    from qualcode.coding.archive import entry, import_
    from qualcode.coding.coder import Requests
    from qualcode.records import CachedAnswer

    req = Requests(llm(), prompts)(nurse_chunk(1))
    good = entry(req.canonical(), req.key(), CachedAnswer(answer={"summary": {"value": "x"}}, raw="{}"))
    path = tmp_path / "answers.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(good.replace('"raw":"{}"', '"raw":"{\\udc80}"') + "\n")
    with AnswerCache(tmp_path / "cache") as cache, pytest.raises(ConfigError, match="line 1: not a qualcode archive"):
        import_(path, cache)
