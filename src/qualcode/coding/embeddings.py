"""Provider embeddings: a text's vector from `/v1/embeddings` of the OpenAI-compatible endpoint, kept in the answer
cache like every answer paid for.

Each text is its own request as far as the cache is concerned (an `LLMRequest` of kind "embeddings" whose one
message is the text: the key is per text and model), so a rerun, or a corpus with documents added, sends only texts
never embedded before; the texts still missing are sent a batch at a time. The same limits (rate, quota, budget) as
coding apply, and the same replay archive holds the answers (`archive_pairs`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..config import LimitsConfig, LLMConfig, Price
from ..errors import ConfigError
from ..ids import utc_now
from ..records import CachedAnswer, LLMRequest
from .cache import AnswerCache
from .client import endpoint, make_client
from .limits import Ledger

logger = logging.getLogger(__name__)

BATCH = 64  # texts per HTTP request: providers accept far more, but a failed batch then costs little to resend


def embedding_request(llm: LLMConfig, model: str, text: str) -> LLMRequest:
    """The request that embeds `text` with `model` at llm's endpoint; its key is the cache key."""
    if llm.provider != "openai":
        raise ConfigError(
            f"embeddings model {model!r} (themes.embeddings, induction.embeddings) needs an OpenAI-compatible server "
            "(llm.provider: openai); leave it unset for the offline vectors"
        )
    where = endpoint(llm)
    return LLMRequest(
        provider=where.provider,
        base_url=where.base_url,
        model=model,
        messages=({"role": "user", "content": text},),
        temperature=0.0,
        top_p=1.0,
        max_tokens=0,
        seed=None,
        response_format=None,
        kind="embeddings",
    )


def embed(
    texts: Sequence[str],
    llm: LLMConfig,
    model: str,
    cache: AnswerCache,
    limits: LimitsConfig | None = None,
    price: Price | None = None,
) -> tuple[list[list[float]], int]:
    """A vector per text, in their order, from the cache or else from the endpoint; and how many texts were sent.
    Every batch answered is in the cache before the next is sent, so a failure loses nothing paid for; a failure
    (after the retries) raises, naming the endpoint."""
    requests = [embedding_request(llm, model, t) for t in texts]
    keys = [r.key() for r in requests]
    found: dict[str, list[float]] = {}
    for key in dict.fromkeys(keys):
        hit = cache.get(key)
        if hit is not None and isinstance(hit.answer.get("embedding"), list):
            found[key] = hit.answer["embedding"]
    missing = [i for i, k in enumerate(keys) if k not in found]
    todo = list({keys[i]: i for i in missing}.values())  # the same text twice is sent once
    if todo:
        logger.info("embeddings: %d texts from the cache, %d to send to %s (%s)", len(found), len(todo),
                    llm.api_base_url, model)  # fmt: skip
        asyncio.run(_send([requests[i] for i in todo], llm, cache, limits, price, found))
    return [found[k] for k in keys], len(todo)


async def _send(
    requests: list[LLMRequest],
    llm: LLMConfig,
    cache: AnswerCache,
    limits: LimitsConfig | None,
    price: Price | None,
    found: dict[str, list[float]],
) -> None:
    ledger = None
    if limits is not None and limits.active:
        ledger = Ledger(cache.directory, f"{endpoint(llm).base_url} {llm.model}", limits, price)
    # Embeddings are always sent as they are asked (llm.mode's batches are for chat answers): a few cheap requests.
    client = make_client(llm.model_copy(update={"mode": "realtime"}), ledger)
    try:
        for start in range(0, len(requests), BATCH):
            batch = requests[start : start + BATCH]
            texts = [r.messages[0]["content"] for r in batch]
            vectors, served, tokens, retries = await client.embed(batch[0].model, texts)  # type: ignore[attr-defined]
            answered = utc_now()
            for req, vector in zip(batch, vectors, strict=True):
                answer = CachedAnswer(
                    answer={"embedding": vector},
                    raw="",
                    model_served=served,
                    tokens_in=tokens if len(batch) == 1 else None,
                    attempts=1,
                    retries=retries,
                    answered_at=answered,
                )
                key = req.key()
                cache.put(key, answer)
                found[key] = vector
    finally:
        await client.aclose()
        if ledger is not None:
            ledger.close()


def archive_pairs(
    texts: Sequence[str], vectors: Sequence[Sequence[float]], llm: LLMConfig, model: str
) -> list[tuple[LLMRequest, CachedAnswer, None]]:
    """The (request, answer) pairs of these embedded texts, as `archive.export` takes them: imported into an empty
    cache, they give the same vectors with no model and no key."""
    return [
        (embedding_request(llm, model, t), CachedAnswer(answer={"embedding": [float(x) for x in v]}, raw=""), None)
        for t, v in zip(texts, vectors, strict=True)
    ]
