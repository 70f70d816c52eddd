"""What the example study would cost at 100,000 chunks: realtime, batch, and batch with the codebook prefix cached.

    python benchmarks/cost.py --input 0.15 --output 0.60 --cached-input 0.075 --batch-discount 0.5 [--sample 8]

Tokens per chunk are measured from a real run: a sample of the example's chunks (spread over the corpus) coded by
the embedded SmolLM2-135M through the same coder as a study (`coding.coder.code_chunks`), reading the usage the model
reports (its own tokenizer, chat template included). The stable prefix (the rendered system prompt: the codebook) is
counted as `qualcode estimate` counts it (tiktoken cl100k), and is cacheable when it reaches the provider's minimum
(--cache-min-tokens, OpenAI's 1,024). The costs come from `coding.estimate.costs_by_mode`, the function behind
`qualcode estimate`, at the prices given (per million tokens). Answers are kept in the example's cache_dir
(.cache/qualcode): a second run, at other prices, answers from it at once. No timing is measured; nothing is sent
anywhere.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from qualcode import config
from qualcode.coding import cache, coder, estimate, prompts
from qualcode.inputs import chunking, ingest
from qualcode.inputs.codebook import load as load_codebook

REPO = Path(__file__).resolve().parent.parent
CHUNKS = 100_000


def measure(sample: int) -> dict:
    """Chunk the example, code `sample` of its chunks with the embedded model, and return tokens per chunk."""
    cfg = config.load(str(REPO / "config/config.yaml"))
    root = REPO / cfg.ingest.input_dir
    docs, _ = ingest.ingest(ingest.discover(root, cfg.ingest.include, cfg.ingest.exclude, ()), root, cfg.ingest)
    chunks = chunking.chunk_documents(docs, cfg.chunking, cfg.prompt_context.metadata)
    step = max(len(chunks) // sample, 1)
    picked = chunks[::step][:sample]
    cb = load_codebook(REPO / cfg.codebook)
    templates = prompts.load(REPO / cfg.prompts["system"], REPO / cfg.prompts["user"], cb, cfg.llm.structured_output)
    with cache.AnswerCache(REPO / cfg.cache_dir) as answers:  # a cache hit carries its original call's tokens
        results = coder.code_chunks(picked, cfg.llm, templates, answers)
    answered = [r for r in results if r.tokens_in]
    return {
        "chunks_in_example": len(chunks),
        "coded": len(answered),
        "failed": sum(r.status == "failed" for r in results),
        "tokens_in": statistics.mean(r.tokens_in for r in answered),
        "tokens_out": statistics.mean(r.tokens_out or 0 for r in answered),
        "asks": statistics.mean(r.attempts for r in answered),
        "templates": templates,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=float, required=True, help="price per million input tokens")
    ap.add_argument("--output", type=float, required=True, help="price per million output tokens")
    ap.add_argument("--cached-input", type=float, default=None, help="per million cached input tokens (default: input)")
    ap.add_argument("--batch-discount", type=float, default=0.5, help="fraction off in a batch (default 0.5)")
    ap.add_argument("--cache-min-tokens", type=int, default=1024, help="shortest prefix the provider caches")
    ap.add_argument("--sample", type=int, default=8, help="chunks of the example to code with the embedded model")
    ap.add_argument("--chunks", type=int, default=CHUNKS, help="chunks of the scaled study")
    args = ap.parse_args()
    price = config.Price(
        input=args.input, output=args.output, cached_input=args.cached_input,
        batch_discount=args.batch_discount, cache_min_tokens=args.cache_min_tokens,
    )  # fmt: skip
    m = measure(args.sample)
    stable = estimate.prefix(m["templates"], price)
    n = args.chunks
    tin, tout = round(m["tokens_in"] * n), round(m["tokens_out"] * n)
    costs = estimate.costs_by_mode(price, n, tin, tout, stable["tokens"], stable["cacheable"])
    print(
        f"tokens per chunk, measured: {m['coded']} of the example's {m['chunks_in_example']} chunks coded by the "
        f"embedded SmolLM2-135M ({m['failed']} failed, {m['asks']:.2f} asks per chunk), its own token counts"
    )
    print(f"  input {m['tokens_in']:,.0f}, output {m['tokens_out']:,.0f} per chunk")
    print(
        f"  stable prefix (system prompt, tiktoken cl100k): {stable['tokens']:,} tokens, "
        + ("cacheable" if stable["cacheable"] else "NOT cacheable")
        + f" (provider minimum {stable['cache_min_tokens']:,})"
    )
    print(f"scaled to {n:,} chunks: {tin:,} input tokens, {tout:,} output tokens")
    cached_price = price.input if price.cached_input is None else price.cached_input
    print(
        f"prices per million tokens: input {price.input}, cached input {cached_price}, output {price.output}, "
        f"batch discount {price.batch_discount:.0%}"
    )
    width = max(len(k) for k in estimate.MODES)
    print(f"{'mode':<{width}}  {'cost':>10}  {'vs realtime':>11}")
    for mode in estimate.MODES:
        print(f"{mode:<{width}}  {costs[mode]:>10.2f}  {costs[mode] / costs['realtime']:>11.2f}")
    if not stable["cacheable"]:  # what a codebook past the provider's minimum would save
        cached = estimate.costs_by_mode(price, n, tin, tout, stable["tokens"], True)
        print(
            f"had the {stable['tokens']:,}-token prefix been cacheable (a longer codebook, or the provider counting "
            "the answer schema with it):"
        )
        for mode in estimate.MODES[1::2]:
            print(f"{mode:<{width}}  {cached[mode]:>10.2f}  {cached[mode] / costs['realtime']:>11.2f}")


if __name__ == "__main__":
    main()
