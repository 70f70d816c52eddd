"""Coding chunks: build each request, answer it from the cache or the model, validate, re-ask on error.

Every chunk ends as exactly one `ChunkResult`, coded or failed: none is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import LimitsConfig, LLMConfig, Price
from ..errors import (
    AnswerError,
    BatchPending,
    CacheError,
    ConfigError,
    LimitReached,
    ProviderError,
    QualcodeError,
    RequestError,
    StorageError,
    storage_errno,
    storage_message,
)
from ..ids import canonical_json, utc_now
from ..logs import redact
from ..records import CachedAnswer, Chunk, ChunkResult, LLMRequest
from .cache import AnswerCache
from .client import Client, Endpoint, endpoint, make_client, response_format
from .journal import HandedAnswers, Journal, absorb, hand_over
from .limits import Ledger
from .prompts import Prompts
from .validate import AnswerValidator, reask_messages

logger = logging.getLogger(__name__)


class Requests:
    """Builds the request for a chunk: what the model is asked, and so the cache key. Needs no cache, no
    network and no key, so the replay archive rebuilds exactly the requests the coding jobs sent."""

    def __init__(self, cfg: LLMConfig, prompts: Prompts, replicate: int = 1):
        self.cfg = cfg
        self.prompts = prompts
        self.replicate = replicate
        self.endpoint: Endpoint = endpoint(cfg)
        self.schema = prompts.codebook.answer_schema()
        self.response_format = response_format(cfg.structured_output, self.schema)
        if cfg.structured_output == "json_schema" and cfg.strict_schema:
            self.response_format["json_schema"]["strict"] = True

    def __call__(self, chunk: Chunk) -> LLMRequest:
        return LLMRequest(
            provider=self.endpoint.provider,
            base_url=self.endpoint.base_url,
            model=self.endpoint.model_id,
            messages=tuple(self.prompts.messages(chunk.text, chunk.speakers, chunk.context, chunk.turn_speaker)),
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            max_tokens=self.cfg.max_tokens,
            seed=self.cfg.seed,
            response_format=self.response_format,
            extra_body=self.cfg.extra_body,
            replicate=self.replicate,
        )


# A lease is renewed while its request is being answered, so it can be short: a run killed mid-request
# holds up another run sharing the cache for at most this long.
LEASE_TTL_S = 60.0
LEASE_POLL_S = 0.5


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_gone(owner: str) -> bool:
    """A lease held by a process of this host that no longer exists (killed): no need to wait for it to expire."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class _NotSent(Exception):
    """The job stopped before this chunk's next request was sent: the chunk is pending."""


class Coder:
    """Codes chunks against one endpoint. The client is built at the first cache miss, so a fully
    cached run needs no model, no network and no key.

    Every answer received goes first to the job's journal (durable), then to the cache; a request is sent
    only by the process holding its lease in the cache, so runs sharing a cache never pay twice."""

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
        self.cache = cache
        self.request = Requests(cfg, prompts, replicate)
        self.endpoint = self.request.endpoint
        self.price = price
        self.journal = journal
        self._client_factory = client_factory
        self._ledger = ledger
        self._client: Client | None = None
        self._answered = False  # the endpoint has answered at least once in this job
        self._unreachable: str | None = None  # set when it refused connections before ever answering
        self._stop: QualcodeError | None = None  # a quota, budget, storage or permanent error: send nothing more
        self._not_kept: list[str] = []  # chunks whose answers, received, no store could take
        self._owner = _owner_id()
        self._leases: set[str] = set()
        self.validate = AnswerValidator(self.request.schema, prompts.codebook.answer_model())

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
        if hit is None:
            hit = await self._claim(key)
        if hit is not None:
            return self._result(chunk, req, key, **_from_cached(hit), cache_hit=True)
        try:
            return await self._ask(chunk, req, key)
        finally:
            self._leases.discard(key)
            try:
                self.cache.release(key, self._owner)
            except CacheError as exc:  # the lease expires by itself; the answer is what matters
                logger.warning("%s", exc)

    async def _claim(self, key: str) -> CachedAnswer | None:
        """Take the lease on `key`; while another process holds it, wait for its answer. Returns that answer,
        or None once this process may send the request itself."""
        waited = False
        while not self.cache.claim(key, self._owner, LEASE_TTL_S, is_stale=_holder_is_gone):
            if not waited:
                logger.info("request %s is being answered by another process; waiting for its answer", key[:12])
                waited = True
            await asyncio.sleep(LEASE_POLL_S)
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        self._leases.add(key)
        return self.cache.get(key)  # answered between the look-up and the claim

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            try:
                if self._leases:
                    self.cache.renew(sorted(self._leases), self._owner, LEASE_TTL_S)
            except CacheError as exc:  # at worst another run sends the same request: a cost, not a loss
                logger.warning("%s", exc)

    async def _ask(self, chunk: Chunk, req: LLMRequest, key: str) -> ChunkResult:
        if self._unreachable:  # don't spend retries on every chunk of a server that is not there
            return self._failed(chunk, req, key, self._unreachable)
        if self._client is None:
            self._client = self._client_factory(self.cfg, self._ledger, getattr(self.cache, "directory", None))
        messages = list(req.messages)
        attempts, reasks, retries, tokens_in, tokens_out = 0, 0, 0, 0, 0
        started = time.monotonic()
        last_raw, last_error, finish = None, None, None
        while True:
            if self._stop is not None:  # a store failed or a limit was reached while this chunk waited or re-asked
                raise _NotSent
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
            finish, last_raw = done.finish_reason, redact(done.content) if done.content is not None else None
            if done.refusal:  # a refusal is the model's considered answer: asking again would pay for it again
                last_error = f"the model refused: {done.refusal[:500]}"
                break
            try:
                answer = self.validate(done.content, done.finish_reason)
            except AnswerError as exc:
                last_error = str(exc)
                if reasks >= self.cfg.max_reasks:
                    break
                reasks += 1
                logger.info("chunk %s: invalid answer (%s); re-asking", chunk.chunk_id, exc)
                messages = [*req.messages, *reask_messages(done.content or "", str(exc))]
                continue
            # An echoed key is kept out of every file and table, however the answer escaped it: redacted again once
            # decoded (`\u0073k-...` in the raw text is `sk-...` in the answer).
            decoded = canonical_json(answer)
            published = redact(decoded)
            if published != decoded:
                answer = json.loads(published)
            cached = CachedAnswer(
                answer=answer,
                raw=last_raw,
                model_served=_redacted(done.model_served),
                system_fingerprint=_redacted(done.system_fingerprint),
                finish_reason=done.finish_reason,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency_s=round(time.monotonic() - started, 3),
                attempts=attempts,
                reasks=reasks,
                retries=retries,
                answered_at=utc_now(),
                batch_id=done.batch_id,
            )
            self._keep(chunk, key, cached)
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

    def _keep(self, chunk: Chunk, key: str, answer: CachedAnswer) -> None:
        """Offer an answer paid for to every store (the journal, durable at once, then the cache), each on its
        own: one that fails (a full disk) never keeps it out of the others. The first failure stops new requests;
        an answer that no store took is counted, for the job's final message. Stored under the first request's
        key, so a rerun finds it without repeating the re-asks."""
        stores = [(self.journal.append, True)] if self.journal is not None else []
        kept = 0
        # a compute job's HandedAnswers hold answers in memory only: its journal is what keeps them
        for put, durable in (*stores, (self.cache.put, isinstance(self.cache, AnswerCache))):
            try:
                put(key, answer)
                kept += durable
            except Exception as exc:
                failure = exc if isinstance(exc, QualcodeError) else self._unexpected(exc, chunk)
                if self._stop is None:
                    logger.error("%s; stopped sending new requests", failure)
                self._stop = self._stop or failure
        if not kept:
            self._not_kept.append(chunk.chunk_id)

    def _unexpected(self, exc: Exception, chunk: Chunk) -> QualcodeError:
        """A full, read-only or failing disk met outside the stores (the limits ledger, say), or a bug."""
        if storage_errno(exc) is not None:
            named = getattr(exc, "filename", None)
            places = [named] if named else [getattr(self.journal, "path", None), getattr(self.cache, "directory", None)]
            places = [p for p in places if p is not None]
            return StorageError(f"while coding chunk {chunk.chunk_id}: {storage_message(exc, places)}")
        logger.exception("chunk %s: unexpected error", chunk.chunk_id)
        return QualcodeError(f"unexpected {type(exc).__name__} while coding chunk {chunk.chunk_id}: {exc}")

    def _failed(self, chunk: Chunk, req: LLMRequest, key: str, error: str, **facts: Any) -> ChunkResult:
        """A failed chunk; `facts` are what is known of the attempts (none if nothing was sent)."""
        empty = dict(
            raw=None, finish_reason=None, tokens_in=None, tokens_out=None, latency_s=None,
            attempts=0, reasks=0, retries=0, answered_at=None,
        )  # fmt: skip
        return self._result(
            chunk, req, key, status="failed", answer_json=None, error=redact(error), model_served=None,
            system_fingerprint=None, cache_hit=False, **{**empty, **facts},
        )  # fmt: skip

    async def code_all(self, chunks: Sequence[Chunk], progress_every_s: float = 15.0) -> list[ChunkResult]:
        """Code every chunk, or stop cleanly: on a quota, budget or permanent error nothing more is sent,
        answers already received stay cached, and the chunks still pending are logged."""
        # The embedded model answers one request at a time; queueing more would only inflate latencies. A batch
        # takes every request of the job at once.
        local, batched = self.endpoint.provider == "local", self.cfg.mode != "realtime"
        sem = asyncio.Semaphore(1 if local else max(len(chunks), 1) if batched else self.cfg.concurrency)
        done: list[ChunkResult] = []
        last_report = time.monotonic()

        async def one(chunk: Chunk) -> ChunkResult | None:
            nonlocal last_report
            async with sem:
                if self._stop is not None:
                    return None
                try:
                    result = await self.code(chunk)
                except _NotSent:
                    return None
                except QualcodeError as exc:  # quota, budget, refused key or model, cache, journal, no key
                    self._stop = self._stop or exc
                    return None
                except Exception as exc:  # a full disk no store named, or a bug: stop sending, say which chunk
                    self._stop = self._stop or self._unexpected(exc, chunk)
                    return None
            done.append(result)
            now = time.monotonic()
            if now - last_report >= progress_every_s or len(done) == len(chunks):
                last_report = now
                logger.info("progress: %s", progress(done, len(chunks), self.price))
            return result

        renewer = asyncio.create_task(self._renew_leases())
        try:
            results = await asyncio.gather(*(one(c) for c in chunks))
        finally:
            renewer.cancel()
            if self._client is not None:
                await self._client.aclose()
        if self._stop is not None:
            raise self._stopped(chunks, results)
        if self._unreachable and not any(r.status == "coded" for r in results):
            raise ProviderError(f"{self._unreachable}; check llm.base_url and that the server is running")
        return list(results)  # type: ignore[arg-type]

    def _stopped(self, chunks: Sequence[Chunk], results: Sequence[ChunkResult | None]) -> QualcodeError:
        pending = [c.chunk_id for c, r in zip(chunks, results, strict=True) if r is None]
        lost = len(self._not_kept)
        coded = sum(1 for r in results if r is not None and r.status == "coded") - lost
        logger.error("%d chunk(s) pending, not sent: %s", len(pending), " ".join(pending))
        exc = self._stop
        when = f"after {exc.resume_at}" if isinstance(exc, LimitReached) and exc.resume_at else "when fixed"
        unkept = ""
        if lost:
            logger.error("%d answer(s) received but kept nowhere: %s", lost, " ".join(self._not_kept))
            unkept = f"; {lost} answer(s) received could not be kept anywhere and will be asked again"
        message = (
            f"{exc}. Stopped sending: {coded} chunk(s) of this job are coded and kept, {len(pending)} pending "
            f"(listed in this job's log){unkept}. Run the workflow again {when}; nothing already answered and kept "
            "is sent again."
        )
        if isinstance(exc, LimitReached):
            return LimitReached(message, resume_at=exc.resume_at)
        same_kind = type(exc) in (ProviderError, CacheError, StorageError, ConfigError, QualcodeError, BatchPending)
        return type(exc)(message) if same_kind else QualcodeError(message)


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


def _redacted(text: str | None) -> str | None:
    """Texts the server chose (the model's name, a fingerprint) are written to tables too."""
    return redact(text) if text is not None else None


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
    limits = limits or LimitsConfig()
    if journal is not None:
        absorb(Path(journal).parent, cache)
    log = Journal(journal) if journal is not None else None
    # The ledger is a second SQLite database: open it only when there is a limit to keep.
    ledger = Ledger(cache.directory, f"{endpoint(cfg).base_url} {cfg.model}", limits, price) if limits.active else None
    try:
        coder = Coder(cfg, prompts, cache, ledger=ledger, price=price, journal=log, replicate=replicate)
        results = asyncio.run(coder.code_all(chunks))
    finally:
        if ledger is not None:
            ledger.close()
        if log is not None:
            log.close()
    if log is not None:
        log.discard()
    return results


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
