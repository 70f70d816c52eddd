"""OpenAI-compatible APIs (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp server) through the openai package.

Transient errors are retried here, and only here: the openai client's own retries are switched off so two retry
layers never stack. Imported only when a request must actually be sent (see `client.make_client`).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import stat
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ..config import LLMConfig, env_name_shown, is_loopback, url_credentials
from ..errors import ConfigError, ProviderError, RequestError
from ..logs import redact, register_secret
from ..records import Completion, LLMRequest, encodable
from .limits import Ledger, estimate_prompt_tokens

logger = logging.getLogger(__name__)

# The HTTP library the installed openai client is built on: httpx2 from openai 3, httpx before (conda-forge's
# openai may be either); both have the same API, which the bounded reading of responses below extends.
_AsyncClient = next(c for c in openai.DefaultAsyncHttpxClient.__mro__ if c.__name__ == "AsyncClient")
httpx = importlib.import_module(_AsyncClient.__module__.partition(".")[0])


# -- retries -------------------------------------------------------------------------------------

_TRANSIENT_STATUS = {408, 409, 425, 429}


def is_transient(exc: BaseException) -> bool:
    if isinstance(
        exc, (openai.APIConnectionError, BadResponse, AnswerTimeout)
    ):  # includes timeouts and dropped connections
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500
    return False


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _waiter(cfg: LLMConfig):
    backoff = wait_exponential_jitter(multiplier=cfg.retry_initial_s, max=cfg.retry_max_s)

    def wait(state: RetryCallState) -> float:
        hinted = _retry_after(state.outcome.exception() if state.outcome else None)
        return max(backoff(state), hinted) if hinted is not None else backoff(state)

    return wait


def _out_of_time(cfg: LLMConfig, what: str):
    """Stop when the next wait would end past `llm.max_retry_time_s`: no new try starts after that bound, so a
    request sequence lasts at most max_retry_time_s + timeout_s, whatever a Retry-After asks for."""

    def stop(state: RetryCallState) -> bool:
        left = cfg.max_retry_time_s - (state.seconds_since_start or 0.0)
        if state.upcoming_sleep <= left:
            return False
        hinted = _retry_after(state.outcome.exception() if state.outcome else None)
        why = f"the server asks to wait {hinted:g} s (Retry-After)" if hinted is not None else "the next wait"
        logger.warning(
            "%s: %s, longer than the %.1f s left of llm.max_retry_time_s (%g s): giving up on this request",
            what, why, max(left, 0.0), cfg.max_retry_time_s,
        )  # fmt: skip
        return True

    return stop


async def with_retries(call, *, cfg: LLMConfig, what: str):
    """Run `call()` with exponential backoff and jitter on transient errors, honouring Retry-After,
    bounded by `llm.max_attempts` and `llm.max_retry_time_s`."""
    attempts = cfg.max_attempts
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts) | _out_of_time(cfg, what),
        wait=_waiter(cfg),
        retry=retry_if_exception(is_transient),
        reraise=True,
        before_sleep=lambda s: logger.warning(
            "%s: %s; retry %d of %d", what, type(s.outcome.exception()).__name__, s.attempt_number, attempts - 1
        ),
    )
    async for attempt in retrying:
        with attempt:
            return await call()


# -- OpenAI-compatible APIs ----------------------------------------------------------------------


def resolve_api_key(cfg: LLMConfig, base_url: str) -> str:
    """The key from `llm.api_key_env`, else `llm.api_key_file`. Servers on this machine need none. A value of
    `llm.api_key_env` that names no variable is never repeated: it may be a key pasted in place of a name."""
    key = os.environ.get(cfg.api_key_env, "").strip() if cfg.api_key_env else ""
    if key and os.environ.get("SLURM_JOB_ID"):
        logger.warning(
            "llm.api_key_env: the key reached this SLURM job in its environment, which the scheduler keeps in its job "
            "records; on a cluster put it in a file readable only by you and name it in llm.api_key_file instead"
        )
    if not key and cfg.api_key_file:
        path = Path(cfg.api_key_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"llm.api_key_file: {path} does not exist")
        if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            logger.warning("llm.api_key_file: %s is readable by other users; run `chmod 600 %s`", path, path)
        key = path.read_text(encoding="utf-8").strip()
    if key:
        register_secret(key)  # blanked out of every log line and failure reason from now on
        return key
    if is_loopback(base_url):
        return "sk-no-key-required"
    file = "llm.api_key_file is not set" if not cfg.api_key_file else "the file named by llm.api_key_file is empty"
    raise ConfigError(
        f"no API key for {base_url}: no environment variable named by llm.api_key_env is set (its value is not shown, "
        f"as it may be a key) and {file}; put the key in an environment variable and write the variable's name "
        "(like OPENAI_API_KEY) in llm.api_key_env, or point llm.api_key_file at a file holding the key"
    )


def connection(url: str) -> tuple[str, dict[str, str]]:
    """`llm.base_url` as the openai client takes it: the URL without its query (the client appends the endpoint's path
    to it), and the query's parameters (an `api-key=` among them), sent with every request. A user name and password
    stay in the URL: httpx sends them as HTTP basic authentication."""
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    return urlunsplit(parts._replace(query="")), dict(parse_qsl(parts.query, keep_blank_values=True))


class BadResponse(Exception):
    """A 200 answer whose body is not a chat completion (e.g. an HTML page from a proxy, or an error object as
    some gateways send with status 200): retried."""


class AnswerTimeout(Exception):
    """No complete answer within `llm.timeout_s`, however slowly the server kept sending: retried."""


class ResponseTooLarge(Exception):
    """A response body larger than `llm.max_response_bytes` once decompressed: not retried (it would be paid for
    again, and a server sending a decompression bomb sends it again)."""

    def __init__(self, limit: int):
        super().__init__(
            f"the response is larger than llm.max_response_bytes ({limit:,} bytes) once decompressed, and was cut "
            "off there; raise llm.max_response_bytes only if this server's answers really are that large"
        )


# -- reading a response within a bound ---------------------------------------------------------------------------

_STEP = 1 << 16  # at most this much is decompressed at once, so the bound holds in memory too, not only at the end
_ENCODINGS = ("gzip", "x-gzip", "deflate")


class _Inflate:
    """gzip or deflate, decompressed in steps of at most `_STEP` bytes (several gzip members in a row included)."""

    def __init__(self, encoding: str):
        self.gzip = encoding != "deflate"
        self._d: Any = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._d is None:
                if not data:
                    return
                # deflate: zlib-wrapped as the standard says, or raw as some servers send it
                raw_deflate = not self.gzip and (data[0] & 0x0F) != 8
                self._d = zlib.decompressobj(31 if self.gzip else -15 if raw_deflate else 15)
            try:
                out = self._d.decompress(data, _STEP)
            except zlib.error as exc:
                raise BadResponse(f"the body is not valid {'gzip' if self.gzip else 'deflate'} ({exc})") from None
            if out:
                yield out
            data = self._d.unconsumed_tail
            if self._d.eof:  # another gzip member may follow
                data, self._d = self._d.unused_data, None
                if not self.gzip:
                    return
            elif not data and len(out) < _STEP:  # a full step may leave output inside zlib: drain it first
                return


class _BoundedBody(httpx.AsyncByteStream):
    """A response body decompressed here, not by the HTTP library, so its size is counted as it grows and reading
    stops at `llm.max_response_bytes`: a small gzip body that expands to gigabytes never reaches memory."""

    def __init__(self, raw: httpx.AsyncByteStream, encoding: str, limit: int):
        self.raw, self.limit = raw, limit
        self.inflate = _Inflate(encoding) if encoding in _ENCODINGS else None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for data in self.raw:
            for piece in self.inflate.feed(data) if self.inflate else (data,):
                seen += len(piece)
                if seen > self.limit:
                    raise ResponseTooLarge(self.limit)
                yield piece

    async def aclose(self) -> None:
        await self.raw.aclose()


class _BoundedHttpClient(openai.DefaultAsyncHttpxClient):
    """The openai client's own HTTP client, whose responses are read within `llm.max_response_bytes`."""

    def __init__(self, limit: int, **kwargs: Any):
        # Only the encodings decompressed here are asked for (httpx would add br or zstd if their packages are
        # installed, and decompress those without a bound).
        super().__init__(headers={"Accept-Encoding": "gzip, deflate"}, **kwargs)
        self.limit = limit

    async def send(self, request: httpx.Request, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        response = await super().send(request, stream=True, **kwargs)
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity", *_ENCODINGS):
            await response.aclose()
            raise BadResponse(f"the response is in Content-Encoding {encoding!r}; qualcode reads gzip and deflate")
        response.stream = _BoundedBody(response.stream, encoding, self.limit)
        if "content-encoding" in response.headers:
            del response.headers["content-encoding"]  # decompressed by _BoundedBody: not to be decoded again
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response


def sdk_client(cfg: LLMConfig, max_bytes: int) -> openai.AsyncOpenAI:
    """The openai package's client for `llm.base_url`, without its own retries, reading responses within
    `max_bytes`."""
    for secret in url_credentials(cfg.connect_url):
        register_secret(secret)
    url, query = connection(cfg.connect_url)
    return openai.AsyncOpenAI(
        base_url=url,
        api_key=resolve_api_key(cfg, cfg.api_base_url),
        max_retries=0,
        timeout=cfg.timeout_s,
        default_query=query or None,
        http_client=_BoundedHttpClient(max_bytes, timeout=cfg.timeout_s),
    )


class OpenAIClient:
    def __init__(self, cfg: LLMConfig, ledger: Ledger | None = None):
        self.cfg = cfg
        self.base_url = cfg.api_base_url  # without credentials: the URL every message names
        self.ledger = ledger if ledger is not None and ledger.active else None
        self._client = sdk_client(cfg, cfg.max_response_bytes)

    async def _metered(
        self, call: Callable[[], Awaitable[Any]], tokens: int, budget: float, paid: Callable[[Any], float]
    ) -> Any:
        """One HTTP request (`call`), counted against the shared limits before it leaves (`tokens`, at most `budget`)
        and settled at what it cost (`paid` of the response), within llm.timeout_s; a body that is not JSON or no
        complete answer in time is a BadResponse or AnswerTimeout (retried by `_retried`)."""
        ledger = self.ledger
        rid = await ledger.acquire(tokens, budget) if ledger else None
        cost = 0.0
        try:
            # A wall-clock bound on the whole request: the client's own timeout applies per read, so a server
            # dripping one byte a second would otherwise hold the request for ever.
            resp = await asyncio.wait_for(call(), self.cfg.timeout_s)
            if ledger and resp.usage:
                cost = paid(resp)
            return resp
        except json.JSONDecodeError as exc:
            raise BadResponse(f"sent a body that is not JSON: {exc}") from None
        except TimeoutError:
            raise AnswerTimeout(f"no complete answer within llm.timeout_s ({self.cfg.timeout_s:g} s)") from None
        finally:
            if rid:
                ledger.settle(rid, cost)

    async def _send(self, kwargs: dict[str, Any], prompt_tokens: int) -> Any:
        """One chat completion request, counted against the shared limits before it leaves."""
        ledger, max_out = self.ledger, kwargs["max_tokens"]

        async def call() -> Any:
            resp = await self._client.chat.completions.create(**kwargs)
            if getattr(resp, "choices", None) is None:
                raise BadResponse(_not_a_completion(resp))
            return resp

        def paid(resp: Any) -> float:
            usage = resp.usage
            return ledger.cost(usage.prompt_tokens or 0, usage.completion_tokens or 0, cached_tokens(usage))

        budget = ledger.cost(prompt_tokens, max_out) if ledger else 0.0
        return await self._metered(call, prompt_tokens + max_out, budget, paid)

    async def complete(self, request: LLMRequest) -> Completion:
        kwargs = chat_kwargs(request)
        prompt_tokens = estimate_prompt_tokens(request.messages) if self.ledger else 0
        resp, retries = await self._retried(lambda: self._send(kwargs, prompt_tokens), request.model)
        return completion(resp, retries=retries)

    async def embed(self, model: str, texts: list[str]) -> tuple[list[list[float]], str | None, int | None, int]:
        """One `/v1/embeddings` request for `texts`, with the same retries, limits and messages as a completion:
        (a vector per text, in their order; the model served; prompt tokens; retries)."""
        tokens = sum(estimate_prompt_tokens([{"role": "user", "content": t}]) for t in texts) if self.ledger else 0

        async def call() -> Any:
            resp = await self._client.embeddings.create(model=model, input=texts, encoding_format="float")
            data = getattr(resp, "data", None)
            if not isinstance(data, list) or len(data) != len(texts):
                raise BadResponse(f"sent {len(data) if isinstance(data, list) else 'no'} embeddings for "
                                  f"{len(texts)} texts")  # fmt: skip
            return resp

        def send() -> Awaitable[Any]:
            ledger = self.ledger
            budget = ledger.cost(tokens, 0) if ledger else 0.0
            return self._metered(call, tokens, budget, lambda resp: ledger.cost(resp.usage.prompt_tokens or 0, 0))

        resp, retries = await self._retried(send, model)
        ordered = sorted(resp.data, key=lambda d: d.index)
        vectors = [[float(x) for x in d.embedding] for d in ordered]
        usage = getattr(resp, "usage", None)
        return vectors, getattr(resp, "model", None), (usage.prompt_tokens if usage else None), retries

    async def _retried(self, call: Any, model: str) -> tuple[Any, int]:
        """`call()` with retries; every failure becomes the RequestError or ProviderError a coding job reports."""
        sent = 0  # HTTP requests for this answer, so retries are counted exactly however retrying stopped

        async def send() -> Any:
            nonlocal sent
            sent += 1
            return await call()

        try:
            resp = await with_retries(send, cfg=self.cfg, what=f"{self.base_url} ({model})")
        except openai.APIStatusError as exc:
            if is_transient(exc):
                raise RequestError(
                    f"{self.base_url} answered HTTP {exc.status_code} after {sent} attempts", retries=sent - 1
                ) from None
            raise ProviderError(self._explain(exc)) from None
        except openai.APITimeoutError:
            raise RequestError(
                f"{self.base_url} did not answer within llm.timeout_s ({self.cfg.timeout_s:g} s) after {sent} attempts",
                retries=sent - 1,
            ) from None
        except openai.APIConnectionError as exc:
            refused = isinstance(exc.__cause__, httpx.ConnectError)
            raise RequestError(
                f"{_connection_problem(self.base_url, exc.__cause__)} (after {sent} attempts)",
                retries=sent - 1,
                unreachable=refused,
            ) from None
        except (BadResponse, AnswerTimeout, ResponseTooLarge) as exc:
            raise RequestError(f"{self.base_url}: {exc} (after {sent} attempts)", retries=sent - 1) from None
        return resp, sent - 1

    def _explain(self, exc: openai.APIStatusError) -> str:
        fix = {
            401: f"the API key was refused: check the key in {self._key_source()}",
            403: "the key may not use this model or endpoint",
            404: f"unknown model or endpoint: check llm.model ({self.cfg.model!r}) and llm.base_url",
        }.get(exc.status_code, "the request was refused: check llm.* settings such as structured_output")
        detail = encodable(redact(getattr(exc, "message", "") or ""))
        return f"{self.base_url} refused model {self.cfg.model!r} with HTTP {exc.status_code}: {fix}. ({detail[:300]})"

    def _key_source(self) -> str:
        name = env_name_shown(self.cfg.api_key_env)
        return f"${name} (llm.api_key_env)" if name else "the file named by llm.api_key_file"

    async def aclose(self) -> None:
        await self._client.close()


def chat_kwargs(request: LLMRequest) -> dict[str, Any]:
    """The chat-completions arguments of a request, as the openai client takes them (`extra_body` apart)."""
    kwargs: dict[str, Any] = {
        "model": request.model,
        "messages": list(request.messages),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
    }
    if request.seed is not None:
        kwargs["seed"] = request.seed
    if request.response_format is not None:
        kwargs["response_format"] = request.response_format
    if request.extra_body:
        kwargs["extra_body"] = request.extra_body
    return kwargs


def chat_body(request: LLMRequest) -> dict[str, Any]:
    """The JSON body the openai client sends for a request (extra_body merged in, as the client merges it): a batch
    file's line carries exactly this, so an answer by batch and one in real time are answers to the same request."""
    kwargs = chat_kwargs(request)
    extra = kwargs.pop("extra_body", {})
    return {**kwargs, **extra}


def completion(resp: Any, retries: int = 0, batch_id: str | None = None) -> Completion:
    """A chat completion (the openai client's object) as a `Completion`."""
    choice = resp.choices[0] if resp.choices else None
    usage = resp.usage
    return Completion(
        content=_content_text(choice.message.content) if choice else "",
        model_served=resp.model,
        finish_reason=choice.finish_reason if choice else None,
        tokens_in=usage.prompt_tokens if usage else None,
        tokens_out=usage.completion_tokens if usage else None,
        tokens_cached=cached_tokens(usage),
        system_fingerprint=getattr(resp, "system_fingerprint", None),
        retries=retries,
        refusal=getattr(choice.message, "refusal", None) if choice else None,
        batch_id=batch_id,
    )


def _connection_problem(base_url: str, cause: BaseException | None) -> str:
    """What went wrong on the connection, in words: only a refused connection or an unknown host is "cannot reach"."""
    if isinstance(cause, httpx.ConnectError):
        return f"cannot reach {base_url} (llm.base_url): connection refused or host unknown"
    if isinstance(cause, httpx.RemoteProtocolError):
        if "too long" in str(cause):  # h11's words for headers past its bound
            return (
                f"{base_url} answered with response headers too large to read (more than the HTTP client's 100 KiB): "
                "check that llm.base_url is the API itself and not a proxy or web page in front of it"
            )
        return f"{base_url} sent a response that is not valid HTTP ({encodable(str(cause))[:200] or 'no detail'})"
    if isinstance(cause, (httpx.ReadError, httpx.WriteError)):
        return f"{base_url} closed the connection before the answer was complete"
    return f"{base_url}: the connection failed ({type(cause).__name__ if cause else 'no detail'})"


def cached_tokens(usage: Any) -> int:
    """The prompt tokens the provider served from its prompt cache (`usage.prompt_tokens_details.cached_tokens`, as
    OpenAI, vLLM and OpenRouter report them); 0 where it does not say."""
    details = getattr(usage, "prompt_tokens_details", None)
    # a dict: usage the client did not parse into its model
    value = details.get("cached_tokens") if isinstance(details, dict) else getattr(details, "cached_tokens", None)
    return value if isinstance(value, int) and value > 0 else 0


def _content_text(content: Any) -> str | None:
    """The answer's text as the server sent it: a string; a list of parts (`[{"type": "text", "text": ...}]`, as
    some OpenAI-compatible servers send), whose texts are joined; None (null) stays None so the reason can say so;
    anything else (an object: a server that parsed the JSON itself) as JSON text, checked like any answer."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part if isinstance(part, str) else str(part.get("text") or "")
            for part in content
            if isinstance(part, str) or (isinstance(part, dict) and part.get("type", "text") in ("text", "output_text"))
        )
    return json.dumps(content, ensure_ascii=False)


def _not_a_completion(resp: Any) -> str:
    error = getattr(resp, "error", None)
    if isinstance(error, dict):  # {"error": {"message": ...}} sent with HTTP 200, as some gateways do
        return f"answered with an error: {encodable(redact(str(error.get('message') or error)))[:300]}"
    return f"sent a body that is not a chat completion: {encodable(redact(str(resp)))[:80]!r}"
