"""Coding chunks: build each chunk's request, ask it through the asker (cache, model, validation, re-asks).

Every chunk ends as exactly one `ChunkResult`, coded or failed: none is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import LimitsConfig, LLMConfig, Price
from ..ids import canonical_json
from ..records import CachedAnswer, Chunk, ChunkResult, LLMRequest
from .asker import (  # noqa: F401  (LEASE_TTL_S, _holder_is_gone, _owner_id, progress: used through this module)
    LEASE_TTL_S,
    Asked,
    Asker,
    Question,
    RequestBuilder,
    _holder_is_gone,
    _owner_id,
    progress,
    session,
)
from .cache import AnswerCache
from .client import Client, Endpoint, make_client
from .journal import HandedAnswers, Journal, absorb, hand_over
from .limits import Ledger
from .prompts import Prompts
from .validate import AnswerValidator


class Requests:
    """Builds the request for a chunk: what the model is asked, and so the cache key. Needs no cache, no
    network and no key, so the replay archive rebuilds exactly the requests the coding jobs sent."""

    def __init__(self, cfg: LLMConfig, prompts: Prompts, replicate: int = 1):
        self.cfg = cfg
        self.prompts = prompts
        self.replicate = replicate
        self.schema = prompts.codebook.answer_schema()
        self.build = RequestBuilder(cfg, self.schema, replicate)
        self.endpoint: Endpoint = self.build.endpoint

    def __call__(self, chunk: Chunk) -> LLMRequest:
        return self.build(self.prompts.messages(chunk.text, chunk.speakers, chunk.context, chunk.turn_speaker))


class Coder:
    """Codes chunks against one endpoint: each chunk's request asked through an `Asker` (cache, leases, journal,
    re-asks), each outcome made one `ChunkResult`."""

    def __init__(
        self,
        cfg: LLMConfig,
        prompts: Prompts,
        cache: AnswerCache | HandedAnswers,
        client_factory: Callable[..., Client] = make_client,
        ledger: Ledger | None = None,
        price: Price | None = None,
        journal: Journal | None = None,
        replicate: int = 1,
    ):
        self.cfg = cfg
        self.prompts = prompts
        self.request = Requests(cfg, prompts, replicate)
        self.endpoint = self.request.endpoint
        self.validate = AnswerValidator(self.request.schema, prompts.codebook.answer_model())
        self.asker = Asker(
            cfg, cache, client_factory, ledger=ledger, price=price, journal=journal, noun="chunk", doing="coding"
        )

    async def code(self, chunk: Chunk) -> ChunkResult:
        asked = await self.asker.ask(Question(chunk.chunk_id, self.request(chunk), self.validate))
        return chunk_result(chunk, self.cfg, asked)

    async def code_all(self, chunks: Sequence[Chunk], progress_every_s: float = 15.0) -> list[ChunkResult]:
        """Code every chunk, or stop cleanly: on a quota, budget or permanent error nothing more is sent,
        answers already received stay cached, and the chunks still pending are logged."""
        # `self.code` looked up at call time: a test may wrap it
        return await self.asker.each(chunks, lambda c: self.code(c), lambda c: c.chunk_id, progress_every_s)


def chunk_result(chunk: Chunk, cfg: LLMConfig, asked: Asked) -> ChunkResult:
    """A chunk's row of results from what came of its question."""
    req = asked.question.request
    base = dict(
        chunk_id=chunk.chunk_id,
        doc_id=chunk.doc_id,
        request_hash=asked.key,
        provider=req.provider,
        base_url=req.base_url,
        model_asked=cfg.model,
    )
    if asked.answer is not None:
        return ChunkResult(**base, **_from_cached(asked.answer), cache_hit=asked.cache_hit)
    return ChunkResult(
        **base, status="failed", answer_json=None, error=asked.error, model_served=None, system_fingerprint=None,
        cache_hit=False, **asked.facts,
    )  # fmt: skip


def _from_cached(hit: CachedAnswer) -> dict[str, Any]:
    return dict(status="coded", answer_json=canonical_json(hit.answer), raw=hit.raw, error=None, **hit.facts())


def code_chunks(
    chunks: Sequence[Chunk],
    cfg: LLMConfig,
    prompts: Prompts,
    cache: AnswerCache,
    limits: LimitsConfig | None = None,
    price: Price | None = None,
    journal: str | Path | None = None,
    replicate: int = 1,
) -> list[ChunkResult]:
    """Code every chunk; the synchronous entry point used by the coding job. `journal` is this job's own
    journal file: journals left beside it by earlier jobs are absorbed into the cache first, and this job's
    is deleted once every answer it holds is safely in the cache. `replicate` > 1 asks the same requests again
    under keys of their own (`validation.replicates`)."""
    with session(cfg, cache, limits, price, journal) as (ledger, log):
        coder = Coder(cfg, prompts, cache, ledger=ledger, price=price, journal=log, replicate=replicate)
        return asyncio.run(coder.code_all(chunks))


# -- coding on compute nodes: the submit host keeps the cache, the compute job keeps its journal ---------------


def request_keys(chunks: Sequence[Chunk], cfg: LLMConfig, prompts: Prompts) -> list[str]:
    build = Requests(cfg, prompts)
    return [build(c).key() for c in chunks]


def hand_over_shard(
    chunks: Sequence[Chunk],
    cfg: LLMConfig,
    prompts: Prompts,
    cache: AnswerCache,
    handed: str | Path,
    journal: str | Path,
) -> tuple[int, int]:
    """On the submit host, before a compute job codes this shard: absorb the journals that jobs left (killed ones
    included) into the cache, then hand the job the cached answers of its requests. Returns (handed, missing)."""
    absorb(Path(journal).parent, cache)
    return hand_over(cache, request_keys(chunks, cfg, prompts), handed)


def code_handed(
    chunks: Sequence[Chunk],
    cfg: LLMConfig,
    prompts: Prompts,
    handed: str | Path,
    journal: str | Path,
    price: Price | None = None,
) -> list[ChunkResult]:
    """Code a shard on a compute node without the cache or the ledger: answers come from the hand-over, then from
    this job's journal (left by an attempt that was killed), then from the model. The journal is kept: the submit
    host absorbs it into the cache."""
    known = HandedAnswers(handed, journal)
    log = Journal(journal)
    try:
        return asyncio.run(Coder(cfg, prompts, known, price=price, journal=log).code_all(chunks))
    finally:
        log.close()
