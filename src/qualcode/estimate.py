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
    """Requests, tokens and cost still to come after the cache. With `pilot.documents` set, for the pilot run, and
    under `full_run_adds` for the full run that follows it (pilot removed), counting the pilot's answers as cached."""
    root = Path(cfg.ingest.input_dir)
    skip_errors = cfg.ingest.model_copy(update={"on_error": "skip"})
    docs, problems = ingest.ingest(
        ingest.discover(root, cfg.ingest.include, cfg.ingest.exclude, cfg.never_inputs), root, skip_errors
    )
    chunks = chunking.chunk_documents(docs, cfg.chunking, cfg.prompt_context.metadata)
    cb = load_codebook(cfg.codebook)
    templates = prompts.load(
        cfg.prompts["system"], cfg.prompts["user"], cb, cfg.llm.structured_output,
        cfg.prompt_context.label_continued_turn,
    )  # fmt: skip
    sample = {d.doc_id for d in ingest.pilot_sample(docs, cfg.pilot.documents, cfg.pilot.seed)}
    with AnswerCache(cfg.cache_dir) as cache:
        coder = Coder(cfg.llm, templates, cache)
        cached_out, to_send, later = [], [], []
        for c in chunks:
            req = coder.request(c)
            hit = cache.get(req.key())
            if hit is None:
                (to_send if c.doc_id in sample else later).append(req)
            elif hit.tokens_out:
                cached_out.append(hit.tokens_out / max(hit.attempts, 1))
    # Output length: what this model wrote per answer so far, else half the ceiling.
    per_answer = statistics.median(cached_out) if cached_out else cfg.llm.max_tokens / 2
    n_sample = sum(c.doc_id in sample for c in chunks)
    run = _requests(cfg, to_send, per_answer)
    out = {
        "documents": len(sample),
        "unreadable_files": len(problems),
        "chunks": n_sample,
        "cached": n_sample - len(to_send),
        **run,
        "output_tokens_basis": "median of cached answers" if cached_out else "half of llm.max_tokens",
        "model": cfg.llm.model,
        "budget": cfg.limits.budget,
        "pilot": None,
    }
    if cfg.pilot.documents is not None:
        out["pilot"] = {
            "documents_in_corpus": len(docs),
            "seed": cfg.pilot.seed,
            "full_run_adds": {"documents": len(docs) - len(sample), **_requests(cfg, later, per_answer)},
        }
    return out


def _requests(cfg: Config, to_send: list, per_answer: float) -> dict[str, Any]:
    tokens_in = sum(estimate_prompt_tokens(r.messages) for r in to_send)
    tokens_out = round(per_answer * len(to_send))
    price = cfg.prices.get(cfg.llm.model)
    cost = cost_max = None
    if price is not None:
        cost = price.cost(tokens_in, tokens_out)
        cost_max = price.cost(tokens_in, cfg.llm.max_tokens * len(to_send))
    return {
        "requests_to_send": len(to_send),
        "input_tokens": tokens_in,
        "output_tokens_expected": tokens_out,
        "cost_expected": cost,
        "cost_at_most": cost_max,
    }


def _money(e: dict[str, Any]) -> str:
    if e["cost_expected"] is None:
        return "no price for this model in `prices`"
    return f"{e['cost_expected']:.4f} expected, {e['cost_at_most']:.4f} at most (every answer at llm.max_tokens)"


def render(e: dict[str, Any]) -> str:
    pilot = e.get("pilot")
    documents = f"{e['documents']} ({e['unreadable_files']} unreadable files skipped)"
    if pilot:
        documents = (
            f"{e['documents']} of {pilot['documents_in_corpus']}, sampled by pilot (seed {pilot['seed']}; "
            f"{e['unreadable_files']} unreadable files skipped)"
        )
    rows = [
        ("documents", documents),
        ("chunks", e["chunks"]),
        ("already answered (cache)", e["cached"]),
        ("requests to send", e["requests_to_send"]),
        ("input tokens (estimated)", e["input_tokens"]),
        ("output tokens (expected)", f"{e['output_tokens_expected']} ({e['output_tokens_basis']})"),
        (f"cost for {e['model']}", _money(e)),
        ("budget (limits.budget)", e["budget"] if e["budget"] is not None else "none"),
    ]
    if pilot:
        adds = pilot["full_run_adds"]
        rows += [
            ("the full run then adds", f"{adds['documents']} documents, {adds['requests_to_send']} requests "
             "(the pilot's answers come from the cache)"),
            ("  input tokens (estimated)", adds["input_tokens"]),
            ("  output tokens (expected)", adds["output_tokens_expected"]),
            (f"  cost for {e['model']}", _money(adds)),
        ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
