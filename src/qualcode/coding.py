"""Coding chunks: build each request, answer it from the cache or the model, validate, re-ask on error.

Every chunk ends as exactly one `ChunkResult`, coded or failed: none is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .cache import AnswerCache, CachedAnswer, LLMRequest
from .chunking import Chunk
from .client import Client, Endpoint, endpoint, make_client, response_format
from .config import LLMConfig
from .errors import AnswerError, RequestError
from .ids import canonical_json
from .prompts import Prompts
from .provenance import utc_now
from .validate import AnswerValidator, reask_messages

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    """The outcome for one chunk: one row of a shard's results, later of codings, llm_calls or failures."""

    chunk_id: str
    doc_id: str
    status: str  # "coded" or "failed"
    answer_json: str | None
    raw: str | None
    error: str | None
    request_hash: str
    provider: str
    base_url: str
    model_asked: str
    model_served: str | None
    system_fingerprint: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    latency_s: float | None
    attempts: int  # asks of the model: the first plus re-asks
    reasks: int
    retries: int  # transient errors retried (extra HTTP requests)
    answered_at: str | None  # UTC time of the original answer, carried by the cache
    cache_hit: bool

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


class Coder:
    """Codes chunks against one endpoint. The client is built at the first cache miss, so a fully
    cached run needs no model, no network and no key."""

    def __init__(
        self,
        cfg: LLMConfig,
        prompts: Prompts,
        cache: AnswerCache,
        client_factory: Callable[[LLMConfig], Client] = make_client,
    ):
        self.cfg = cfg
        self.prompts = prompts
        self.cache = cache
        self.endpoint: Endpoint = endpoint(cfg)
        self._client_factory = client_factory
        self._client: Client | None = None
        schema = prompts.codebook.answer_schema()
        self.validate = AnswerValidator(schema, prompts.codebook.answer_model())
        self.response_format = response_format(cfg.structured_output, schema)
        if cfg.structured_output == "json_schema" and cfg.strict_schema:
            self.response_format["json_schema"]["strict"] = True

    def request(self, chunk: Chunk) -> LLMRequest:
        return LLMRequest(
            provider=self.endpoint.provider,
            base_url=self.endpoint.base_url,
            model=self.endpoint.model_id,
            messages=tuple(self.prompts.messages(chunk.text, chunk.speakers)),
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            max_tokens=self.cfg.max_tokens,
            seed=self.cfg.seed,
            response_format=self.response_format,
            extra_body=self.cfg.extra_body,
        )

    def _result(self, chunk: Chunk, req: LLMRequest, key: str, **kw: Any) -> ChunkResult:
        base = dict(
            chunk_id=chunk.chunk_id,
            doc_id=chunk.doc_id,
            request_hash=key,
            provider=req.provider,
            base_url=req.base_url,
            model_asked=self.cfg.model,
        )
        return ChunkResult(**base, **kw)

    async def code(self, chunk: Chunk) -> ChunkResult:
        req = self.request(chunk)
        key = req.key()
        hit = self.cache.get(key)
        if hit is not None:
            return self._result(chunk, req, key, **_from_cached(hit), cache_hit=True)

        if self._client is None:
            self._client = self._client_factory(self.cfg)
        messages = list(req.messages)
        attempts, reasks, retries, tokens_in, tokens_out = 0, 0, 0, 0, 0
        started = time.monotonic()
        last_raw, last_error, finish = None, None, None
        while True:
            attempts += 1
            try:
                done = await self._client.complete(req.model_copy(update={"messages": tuple(messages)}))
            except RequestError as exc:
                last_error, retries = str(exc), retries + exc.retries
                break
            retries += done.retries
            tokens_in += done.tokens_in or 0
            tokens_out += done.tokens_out or 0
            finish, last_raw = done.finish_reason, done.content
            try:
                answer = self.validate(done.content, done.finish_reason)
            except AnswerError as exc:
                last_error = str(exc)
                if reasks >= self.cfg.max_reasks:
                    break
                reasks += 1
                logger.info("chunk %s: invalid answer (%s); re-asking", chunk.chunk_id, exc)
                messages = [*req.messages, *reask_messages(done.content, str(exc))]
                continue
            cached = CachedAnswer(
                answer=answer,
                raw=done.content,
                model_served=done.model_served,
                system_fingerprint=done.system_fingerprint,
                finish_reason=done.finish_reason,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency_s=round(time.monotonic() - started, 3),
                attempts=attempts,
                reasks=reasks,
                retries=retries,
                answered_at=utc_now(),
            )
            # Stored under the first request's key, so a rerun finds it without repeating the re-asks.
            self.cache.put(key, cached)
            return self._result(chunk, req, key, **_from_cached(cached), cache_hit=False)
        return self._result(
            chunk,
            req,
            key,
            status="failed",
            answer_json=None,
            raw=last_raw,
            error=last_error,
            model_served=None,
            system_fingerprint=None,
            finish_reason=finish,
            tokens_in=tokens_in or None,
            tokens_out=tokens_out or None,
            latency_s=round(time.monotonic() - started, 3),
            attempts=attempts,
            reasks=reasks,
            retries=retries,
            answered_at=utc_now(),
            cache_hit=False,
        )

    async def code_all(self, chunks: Sequence[Chunk], progress_every_s: float = 15.0) -> list[ChunkResult]:
        # The embedded model answers one request at a time; queueing more would only inflate latencies.
        sem = asyncio.Semaphore(1 if self.endpoint.provider == "local" else self.cfg.concurrency)
        done: list[ChunkResult] = []
        last_report = time.monotonic()

        async def one(chunk: Chunk) -> ChunkResult:
            nonlocal last_report
            async with sem:
                result = await self.code(chunk)
            done.append(result)
            now = time.monotonic()
            if now - last_report >= progress_every_s or len(done) == len(chunks):
                last_report = now
                logger.info("progress: %s", progress(done, len(chunks)))
            return result

        try:
            return list(await asyncio.gather(*(one(c) for c in chunks)))
        finally:
            if self._client is not None:
                await self._client.aclose()


def progress(results: Sequence[ChunkResult], total: int) -> str:
    hits = sum(r.cache_hit for r in results)
    failed = sum(r.status == "failed" for r in results)
    reasks = sum(r.reasks for r in results if not r.cache_hit)
    retries = sum(r.retries for r in results if not r.cache_hit)
    tokens = sum((r.tokens_in or 0) + (r.tokens_out or 0) for r in results if not r.cache_hit)
    return (
        f"{len(results)}/{total} chunks, {hits} from cache, {failed} failed, "
        f"{reasks} re-asks, {retries} retries, {tokens} tokens sent and received"
    )


def _from_cached(hit: CachedAnswer) -> dict[str, Any]:
    return dict(
        status="coded",
        answer_json=canonical_json(hit.answer),
        raw=hit.raw,
        error=None,
        model_served=hit.model_served,
        system_fingerprint=hit.system_fingerprint,
        finish_reason=hit.finish_reason,
        tokens_in=hit.tokens_in,
        tokens_out=hit.tokens_out,
        latency_s=hit.latency_s,
        attempts=hit.attempts,
        reasks=hit.reasks,
        retries=hit.retries,
        answered_at=hit.answered_at,
    )


def code_chunks(chunks: Sequence[Chunk], cfg: LLMConfig, prompts: Prompts, cache: AnswerCache) -> list[ChunkResult]:
    """Code every chunk; the synchronous entry point used by the coding job."""
    return asyncio.run(Coder(cfg, prompts, cache).code_all(chunks))
