"""What a run will cost before it starts: requests still to send after the cache, tokens, money."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from . import chunking, ingest, prompts
from .cache import AnswerCache
from .codebook import load as load_codebook
from .coding import Coder
from .config import Config
from .limits import estimate_prompt_tokens


def estimate(cfg: Config) -> dict[str, Any]:
    root = Path(cfg.ingest.input_dir)
    skip_errors = cfg.ingest.model_copy(update={"on_error": "skip"})
    docs, problems = ingest.ingest(ingest.discover(root, cfg.ingest.include), root, skip_errors)
    chunks = chunking.chunk_documents(docs, cfg.chunking, cfg.prompt_context.metadata)
    cb = load_codebook(cfg.codebook)
    templates = prompts.load(
        cfg.prompts["system"], cfg.prompts["user"], cb, cfg.llm.structured_output,
        cfg.prompt_context.label_continued_turn,
    )  # fmt: skip
    with AnswerCache(cfg.cache_dir) as cache:
        coder = Coder(cfg.llm, templates, cache)
        cached_out, to_send = [], []
        for c in chunks:
            req = coder.request(c)
            hit = cache.get(req.key())
            if hit is None:
                to_send.append(req)
            elif hit.tokens_out:
                cached_out.append(hit.tokens_out / max(hit.attempts, 1))
    tokens_in = sum(estimate_prompt_tokens(r.messages) for r in to_send)
    # Output length: what this model wrote per answer so far, else half the ceiling.
    per_answer = statistics.median(cached_out) if cached_out else cfg.llm.max_tokens / 2
    tokens_out = round(per_answer * len(to_send))
    price = cfg.prices.get(cfg.llm.model)
    cost = cost_max = None
    if price is not None:
        cost = price.cost(tokens_in, tokens_out)
        cost_max = price.cost(tokens_in, cfg.llm.max_tokens * len(to_send))
    return {
        "documents": len(docs),
        "unreadable_files": len(problems),
        "chunks": len(chunks),
        "cached": len(chunks) - len(to_send),
        "requests_to_send": len(to_send),
        "input_tokens": tokens_in,
        "output_tokens_expected": tokens_out,
        "output_tokens_basis": "median of cached answers" if cached_out else "half of llm.max_tokens",
        "cost_expected": cost,
        "cost_at_most": cost_max,
        "model": cfg.llm.model,
        "budget": cfg.limits.budget,
    }


def render(e: dict[str, Any]) -> str:
    money = (
        "no price for this model in `prices`"
        if e["cost_expected"] is None
        else (f"{e['cost_expected']:.4f} expected, {e['cost_at_most']:.4f} at most (every answer at llm.max_tokens)")
    )
    rows = [
        ("documents", f"{e['documents']} ({e['unreadable_files']} unreadable files skipped)"),
        ("chunks", e["chunks"]),
        ("already answered (cache)", e["cached"]),
        ("requests to send", e["requests_to_send"]),
        ("input tokens (estimated)", e["input_tokens"]),
        ("output tokens (expected)", f"{e['output_tokens_expected']} ({e['output_tokens_basis']})"),
        (f"cost for {e['model']}", money),
        ("budget (limits.budget)", e["budget"] if e["budget"] is not None else "none"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
