"""Asking a model anything: one question, answered from the cache or by the model, validated, re-asked on error,
kept in the journal and the cache before it is used.

Every kind of request (coding a chunk, proposing codes, naming a theme, proposing a revision) goes through this
loop, so each gets the same cache keys, leases between runs sharing a cache, limits, journal and re-asks. What a
request asks and what its answer becomes belong to the caller (`coder.Coder` for chunks).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
from ..records import CachedAnswer, LLMRequest
from .cache import AnswerCache
from .client import Client, endpoint, make_client, response_format
from .journal import HandedAnswers, Journal, absorb
from .limits import Ledger
from .validate import reask_messages

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class RequestBuilder:
    """Requests asking messages of the configured endpoint, their answers constrained by `schema` as the settings
    say (`llm.structured_output`, `llm.strict_schema`), with the same sampling settings as coding. Who answers is
    worked out once (for the embedded model, the file's hash)."""

    def __init__(self, cfg: LLMConfig, schema: dict[str, Any], replicate: int = 1):
        self.cfg = cfg
        self.endpoint = endpoint(cfg)
        self.schema = schema
        self.replicate = replicate
        self.response_format = response_format(cfg.structured_output, schema)
        if self.response_format is not None and cfg.structured_output == "json_schema" and cfg.strict_schema:
            self.response_format["json_schema"]["strict"] = True

    def __call__(self, messages: Sequence[dict[str, str]]) -> LLMRequest:
        cfg = self.cfg
        return LLMRequest(
            provider=self.endpoint.provider,
            base_url=self.endpoint.base_url,
            model=self.endpoint.model_id,
            messages=tuple(messages),
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
            response_format=self.response_format,
            extra_body=cfg.extra_body,
            replicate=self.replicate,
        )


def request_for(
    cfg: LLMConfig, messages: Sequence[dict[str, str]], schema: dict[str, Any], replicate: int = 1
) -> LLMRequest:
    """One request (for many, build a `RequestBuilder` once)."""
    return RequestBuilder(cfg, schema, replicate)(messages)


@dataclass(frozen=True)
class Question:
    """One request and how to check its answer. `id` names it in logs and messages (a chunk id, "group 3")."""

    id: str
    request: LLMRequest
    # content, finish_reason -> the parsed answer, or AnswerError in words a model can act on (`AnswerValidator`)
    validate: Callable[[str | None, str | None], dict[str, Any]]


@dataclass(frozen=True)
class Asked:
    """What came of a question: a validated answer (from the cache or the model), or a failure with what is known
    of the attempts (`facts`: raw, finish_reason, tokens, latency, attempts, re-asks, retries, answered_at)."""

    question: Question
    key: str
    answer: CachedAnswer | None
    cache_hit: bool = False
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.question.id

    @property
    def status(self) -> str:
        return "coded" if self.answer is not None else "failed"

    def _fact(self, name: str) -> Any:
        return getattr(self.answer, name) if self.answer is not None else self.facts.get(name)

    @property
    def reasks(self) -> int:
        return self._fact("reasks") or 0

    @property
    def retries(self) -> int:
        return self._fact("retries") or 0

    @property
    def tokens_in(self) -> int | None:
        return self._fact("tokens_in")

    @property
    def tokens_out(self) -> int | None:
        return self._fact("tokens_out")

    @property
    def tokens_cached(self) -> int | None:
        return self._fact("tokens_cached")

    @property
    def batch_id(self) -> str | None:
        return self._fact("batch_id")


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


class NotSent(Exception):
    """The job stopped before this question's next request was sent: it is pending."""


class Asker:
    """Asks questions of one endpoint. The client is built at the first cache miss, so a fully cached run needs no
    model, no network and no key.

    Every answer received goes first to the job's journal (durable), then to the cache; a request is sent only by
    the process holding its lease in the cache, so runs sharing a cache never pay twice. `noun` names what the
    questions are about in messages ("chunk"), `doing` what asking them is ("coding")."""

    def __init__(
        self,
        cfg: LLMConfig,
        cache: AnswerCache | HandedAnswers,
        client_factory: Callable[..., Client] = make_client,
        ledger: Ledger | None = None,
        price: Price | None = None,
        journal: Journal | None = None,
        noun: str = "request",
        doing: str = "asking",
    ):
        self.cfg = cfg
        self.cache = cache
        self.endpoint = endpoint(cfg)
        self.price = price
        self.journal = journal
        self.noun, self.doing = noun, doing
        self._client_factory = client_factory
        self._ledger = ledger
        self._client: Client | None = None
        self._answered = False  # the endpoint has answered at least once in this job
        self._unreachable: str | None = None  # set when it refused connections before ever answering
        self._stop: QualcodeError | None = None  # a quota, budget, storage or permanent error: send nothing more
        self._not_kept: list[str] = []  # questions whose answers, received, no store could take
        self._owner = _owner_id()
        self._leases: set[str] = set()

    async def ask(self, q: Question) -> Asked:
        key = q.request.key()
        hit = self.cache.get(key)
        if hit is None:
            hit = await self._claim(key)
        if hit is not None:
            return Asked(q, key, hit, cache_hit=True)
        try:
            return await self._ask(q, key)
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

    async def _ask(self, q: Question, key: str) -> Asked:
        if self._unreachable:  # don't spend retries on every question to a server that is not there
            return self._failed(q, key, self._unreachable)
        if self._client is None:
            self._client = self._client_factory(self.cfg, self._ledger, getattr(self.cache, "directory", None))
        req = q.request
        messages = list(req.messages)
        attempts, reasks, retries, tokens_in, tokens_out, tokens_cached = 0, 0, 0, 0, 0, 0
        started = time.monotonic()
        last_raw, last_error, finish = None, None, None
        while True:
            if self._stop is not None:  # a store failed or a limit was reached while this question waited
                raise NotSent
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
            tokens_cached += done.tokens_cached
            finish, last_raw = done.finish_reason, redact(done.content) if done.content is not None else None
            if done.refusal:  # a refusal is the model's considered answer: asking again would pay for it again
                last_error = f"the model refused: {done.refusal[:500]}"
                break
            try:
                answer = q.validate(done.content, done.finish_reason)
            except AnswerError as exc:
                last_error = str(exc)
                if reasks >= self.cfg.max_reasks:
                    break
                reasks += 1
                logger.info("%s %s: invalid answer (%s); re-asking", self.noun, q.id, exc)
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
                tokens_cached=tokens_cached,
                latency_s=round(time.monotonic() - started, 3),
                attempts=attempts,
                reasks=reasks,
                retries=retries,
                answered_at=utc_now(),
                batch_id=done.batch_id,
            )
            self._keep(q, key, cached)
            return Asked(q, key, cached, cache_hit=False)
        return self._failed(
            q,
            key,
            last_error or "unknown",
            raw=last_raw,
            finish_reason=finish,
            tokens_in=tokens_in or None,
            tokens_out=tokens_out or None,
            tokens_cached=tokens_cached if tokens_in else None,
            latency_s=round(time.monotonic() - started, 3),
            attempts=attempts,
            reasks=reasks,
            retries=retries,
            answered_at=utc_now(),
        )

    def _keep(self, q: Question, key: str, answer: CachedAnswer) -> None:
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
                failure = exc if isinstance(exc, QualcodeError) else self.unexpected(exc, q.id)
                if self._stop is None:
                    logger.error("%s; stopped sending new requests", failure)
                self._stop = self._stop or failure
        if not kept:
            self._not_kept.append(q.id)

    def unexpected(self, exc: Exception, item: str) -> QualcodeError:
        """A full, read-only or failing disk met outside the stores (the limits ledger, say), or a bug."""
        if storage_errno(exc) is not None:
            named = getattr(exc, "filename", None)
            places = [named] if named else [getattr(self.journal, "path", None), getattr(self.cache, "directory", None)]
            places = [p for p in places if p is not None]
            return StorageError(f"while {self.doing} {self.noun} {item}: {storage_message(exc, places)}")
        logger.exception("%s %s: unexpected error", self.noun, item)
        return QualcodeError(f"unexpected {type(exc).__name__} while {self.doing} {self.noun} {item}: {exc}")

    def _failed(self, q: Question, key: str, error: str, **facts: Any) -> Asked:
        """A failed question; `facts` are what is known of the attempts (none if nothing was sent)."""
        empty = dict(
            raw=None, finish_reason=None, tokens_in=None, tokens_out=None, tokens_cached=None, latency_s=None,
            attempts=0, reasks=0, retries=0, answered_at=None,
        )  # fmt: skip
        return Asked(q, key, None, cache_hit=False, error=redact(error), facts={**empty, **facts})

    async def each(
        self,
        items: Sequence[T],
        work: Callable[[T], Awaitable[R]],
        item_id: Callable[[T], str],
        progress_every_s: float = 15.0,
    ) -> list[R]:
        """Run `work` (which asks through this asker) on every item, at most `llm.concurrency` at once, or stop
        cleanly: on a quota, budget or permanent error nothing more is sent, answers already received stay cached,
        and the items still pending are logged."""
        # The embedded model answers one request at a time; queueing more would only inflate latencies. A batch
        # takes every request of the job at once.
        local, batched = self.endpoint.provider == "local", self.cfg.mode != "realtime"
        sem = asyncio.Semaphore(1 if local else max(len(items), 1) if batched else self.cfg.concurrency)
        done: list[R] = []
        last_report = time.monotonic()

        async def one(item: T) -> R | None:
            nonlocal last_report
            async with sem:
                if self._stop is not None:
                    return None
                try:
                    result = await work(item)
                except NotSent:
                    return None
                except QualcodeError as exc:  # quota, budget, refused key or model, cache, journal, no key
                    self._stop = self._stop or exc
                    return None
                except Exception as exc:  # a full disk no store named, or a bug: stop sending, say which item
                    self._stop = self._stop or self.unexpected(exc, item_id(item))
                    return None
            done.append(result)
            now = time.monotonic()
            if now - last_report >= progress_every_s or len(done) == len(items):
                last_report = now
                logger.info("progress: %s", progress(done, len(items), self.price, self.noun))  # type: ignore[arg-type]
            return result

        renewer = asyncio.create_task(self._renew_leases())
        try:
            results = await asyncio.gather(*(one(i) for i in items))
        finally:
            renewer.cancel()
            if self._client is not None:
                await self._client.aclose()
        if self._stop is not None:
            raise self._stopped([item_id(i) for i in items], results)
        if self._unreachable and not any(getattr(r, "status", None) == "coded" for r in results):
            raise ProviderError(f"{self._unreachable}; check llm.base_url and that the server is running")
        return list(results)  # type: ignore[arg-type]

    async def ask_all(self, questions: Sequence[Question], progress_every_s: float = 15.0) -> list[Asked]:
        return await self.each(questions, self.ask, lambda q: q.id, progress_every_s)

    def _stopped(self, ids: Sequence[str], results: Sequence[Any]) -> QualcodeError:
        pending = [i for i, r in zip(ids, results, strict=True) if r is None]
        lost = len(self._not_kept)
        answered = sum(1 for r in results if r is not None and r.status == "coded") - lost
        logger.error("%d %s(s) pending, not sent: %s", len(pending), self.noun, " ".join(pending))
        exc = self._stop
        when = f"after {exc.resume_at}" if isinstance(exc, LimitReached) and exc.resume_at else "when fixed"
        unkept = ""
        if lost:
            logger.error("%d answer(s) received but kept nowhere: %s", lost, " ".join(self._not_kept))
            unkept = f"; {lost} answer(s) received could not be kept anywhere and will be asked again"
        verb = "coded" if self.noun == "chunk" else "answered"
        message = (
            f"{exc}. Stopped sending: {answered} {self.noun}(s) of this job are {verb} and kept, {len(pending)} "
            f"pending (listed in this job's log){unkept}. Run the workflow again {when}; nothing already answered "
            "and kept is sent again."
        )
        if isinstance(exc, LimitReached):
            return LimitReached(message, resume_at=exc.resume_at)
        same_kind = type(exc) in (ProviderError, CacheError, StorageError, ConfigError, QualcodeError, BatchPending)
        return type(exc)(message) if same_kind else QualcodeError(message)


def progress(results: Sequence[Any], total: int, price: Price | None = None, noun: str = "chunk") -> str:
    """One line on how far a job is: results are `Asked` or `ChunkResult` rows (anything with their facts)."""
    hits = sum(r.cache_hit for r in results)
    failed = sum(r.status == "failed" for r in results)
    reasks = sum(r.reasks for r in results if not r.cache_hit)
    retries = sum(r.retries for r in results if not r.cache_hit)
    t_in = sum(r.tokens_in or 0 for r in results if not r.cache_hit)
    t_out = sum(r.tokens_out or 0 for r in results if not r.cache_hit)
    t_cached = sum(r.tokens_cached or 0 for r in results if not r.cache_hit)
    cost = f", cost {sum(price.paid(r) for r in results if not r.cache_hit):.4f}" if price else ""
    return (
        f"{len(results)}/{total} {noun}s, {hits} from cache, {failed} failed, "
        f"{reasks} re-asks, {retries} retries, {t_in} tokens in ({t_cached} cached), {t_out} out{cost}"
    )


def _redacted(text: str | None) -> str | None:
    """Texts the server chose (the model's name, a fingerprint) are written to tables too."""
    return redact(text) if text is not None else None


@contextmanager
def session(
    cfg: LLMConfig,
    cache: AnswerCache,
    limits: LimitsConfig | None = None,
    price: Price | None = None,
    journal: str | Path | None = None,
) -> Iterator[tuple[Ledger | None, Journal | None]]:
    """What a job that asks needs around its asker: journals left beside `journal` by earlier jobs absorbed into
    the cache first; this job's journal, deleted once every answer it holds is safely in the cache; the limits
    ledger when there is a limit to keep."""
    limits = limits or LimitsConfig()
    if journal is not None:
        absorb(Path(journal).parent, cache)
    log = Journal(journal) if journal is not None else None
    # The ledger is a second SQLite database: open it only when there is a limit to keep.
    ledger = Ledger(cache.directory, f"{endpoint(cfg).base_url} {cfg.model}", limits, price) if limits.active else None
    try:
        yield ledger, log
    finally:
        if ledger is not None:
            ledger.close()
        if log is not None:
            log.close()
    if log is not None:
        log.discard()


def ask_questions(
    questions: Sequence[Question],
    cfg: LLMConfig,
    cache: AnswerCache,
    limits: LimitsConfig | None = None,
    price: Price | None = None,
    journal: str | Path | None = None,
    noun: str = "request",
) -> list[Asked]:
    """Ask every question (the synchronous entry point for a job): answers from the cache cost nothing; the rest
    are sent, checked, re-asked when invalid and kept before they are returned. A quota, budget or storage failure
    raises after keeping every answer already paid for; any other failure is an `Asked` with its error."""
    with session(cfg, cache, limits, price, journal) as (ledger, log):
        asker = Asker(cfg, cache, ledger=ledger, price=price, journal=log, noun=noun)
        return asyncio.run(asker.ask_all(questions))
