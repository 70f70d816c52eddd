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
from .config import LimitsConfig, LLMConfig, Price
from .errors import AnswerError, LimitReached, ProviderError, QualcodeError, RequestError
from .ids import canonical_json
from .limits import Ledger
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
        client_factory: Callable[..., Client] = make_client,
        ledger: Ledger | None = None,
        price: Price | None = None,
    ):
        self.cfg = cfg
        self.prompts = prompts
        self.cache = cache
        self.endpoint: Endpoint = endpoint(cfg)
        self.price = price
        self._client_factory = client_factory
        self._ledger = ledger
        self._client: Client | None = None
        self._answered = False  # the endpoint has answered at least once in this job
        self._unreachable: str | None = None  # set when it refused connections before ever answering
        self._stop: QualcodeError | None = None  # a quota, budget or permanent error: send nothing more
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

        if self._unreachable:  # don't spend retries on every chunk of a server that is not there
            return self._failed(chunk, req, key, self._unreachable)
        if self._client is None:
            self._client = self._client_factory(self.cfg, self._ledger)
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
                if exc.unreachable and not self._answered:
                    self._unreachable = last_error
                break
            self._answered = True
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
        return self._failed(
            chunk,
            req,
            key,
            last_error or "unknown",
            raw=last_raw,
            finish_reason=finish,
            tokens_in=tokens_in or None,
            tokens_out=tokens_out or None,
            latency_s=round(time.monotonic() - started, 3),
            attempts=attempts,
            reasks=reasks,
            retries=retries,
            answered_at=utc_now(),
        )

    def _failed(self, chunk: Chunk, req: LLMRequest, key: str, error: str, **facts: Any) -> ChunkResult:
        """A failed chunk; `facts` are what is known of the attempts (none if nothing was sent)."""
        empty = dict(
            raw=None, finish_reason=None, tokens_in=None, tokens_out=None, latency_s=None,
            attempts=0, reasks=0, retries=0, answered_at=None,
        )  # fmt: skip
        return self._result(
            chunk, req, key, status="failed", answer_json=None, error=error, model_served=None,
            system_fingerprint=None, cache_hit=False, **{**empty, **facts},
        )  # fmt: skip

    async def code_all(self, chunks: Sequence[Chunk], progress_every_s: float = 15.0) -> list[ChunkResult]:
        """Code every chunk, or stop cleanly: on a quota, budget or permanent error nothing more is sent,
        answers already received stay cached, and the chunks still pending are logged."""
        # The embedded model answers one request at a time; queueing more would only inflate latencies.
        sem = asyncio.Semaphore(1 if self.endpoint.provider == "local" else self.cfg.concurrency)
        done: list[ChunkResult] = []
        last_report = time.monotonic()

        async def one(chunk: Chunk) -> ChunkResult | None:
            nonlocal last_report
            async with sem:
                if self._stop is not None:
                    return None
                try:
                    result = await self.code(chunk)
                except (LimitReached, ProviderError) as exc:
                    self._stop = self._stop or exc
                    return None
            done.append(result)
            now = time.monotonic()
            if now - last_report >= progress_every_s or len(done) == len(chunks):
                last_report = now
                logger.info("progress: %s", progress(done, len(chunks), self.price))
            return result

        try:
            results = await asyncio.gather(*(one(c) for c in chunks))
        finally:
            if self._client is not None:
                await self._client.aclose()
        if self._stop is not None:
            raise self._stopped(chunks, results)
        if self._unreachable and not any(r.status == "coded" for r in results):
            raise ProviderError(f"{self._unreachable}; check llm.base_url and that the server is running")
        return list(results)  # type: ignore[arg-type]

    def _stopped(self, chunks: Sequence[Chunk], results: Sequence[ChunkResult | None]) -> QualcodeError:
        pending = [c.chunk_id for c, r in zip(chunks, results, strict=True) if r is None]
        coded = sum(1 for r in results if r is not None and r.status == "coded")
        logger.error("%d chunk(s) pending, not sent: %s", len(pending), " ".join(pending))
        exc = self._stop
        when = f"after {exc.resume_at}" if isinstance(exc, LimitReached) and exc.resume_at else "when fixed"
        message = (
            f"{exc}. Stopped sending: {coded} chunk(s) of this job are coded and cached, {len(pending)} pending "
            f"(listed in this job's log). Run the workflow again {when}; nothing already answered is sent again."
        )
        if isinstance(exc, LimitReached):
            return LimitReached(message, resume_at=exc.resume_at)
        return type(exc)(message)


def progress(results: Sequence[ChunkResult], total: int, price: Price | None = None) -> str:
    hits = sum(r.cache_hit for r in results)
    failed = sum(r.status == "failed" for r in results)
    reasks = sum(r.reasks for r in results if not r.cache_hit)
    retries = sum(r.retries for r in results if not r.cache_hit)
    t_in = sum(r.tokens_in or 0 for r in results if not r.cache_hit)
    t_out = sum(r.tokens_out or 0 for r in results if not r.cache_hit)
    cost = f", cost {price.cost(t_in, t_out):.4f}" if price else ""
    return (
        f"{len(results)}/{total} chunks, {hits} from cache, {failed} failed, "
        f"{reasks} re-asks, {retries} retries, {t_in} tokens in, {t_out} out{cost}"
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


def code_chunks(
    chunks: Sequence[Chunk],
    cfg: LLMConfig,
    prompts: Prompts,
    cache: AnswerCache,
    limits: LimitsConfig | None = None,
    price: Price | None = None,
) -> list[ChunkResult]:
    """Code every chunk; the synchronous entry point used by the coding job."""
    ledger = Ledger(cache.directory, f"{endpoint(cfg).base_url} {cfg.model}", limits or LimitsConfig(), price)
    try:
        return asyncio.run(Coder(cfg, prompts, cache, ledger=ledger, price=price).code_all(chunks))
    finally:
        ledger.close()
