"""The answer cache: validated answers keyed by the hash of everything that determines them.

diskcache is SQLite underneath: safe for several processes on a local disk, not on NFS or Lustre.
Values are stored as JSON text, not pickles, so a cache stays readable by any later version.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import diskcache
from pydantic import BaseModel, ConfigDict

from .ids import canonical_json, stable_hash

logger = logging.getLogger(__name__)


class LLMRequest(BaseModel):
    """Everything that determines an answer. Its hash is the cache key; it never holds the API key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    base_url: str
    model: str
    messages: tuple[dict[str, str], ...]
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    response_format: dict[str, Any] | None
    extra_body: dict[str, Any] = {}

    def key(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


class CachedAnswer(BaseModel):
    """A validated answer and the facts of the call that produced it (kept for the llm_calls table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: dict[str, Any]
    raw: str
    model_served: str | None
    system_fingerprint: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    latency_s: float
    attempts: int
    reasks: int
    retries: int = 0
    answered_at: str | None = None


class AnswerCache:
    """Only validated answers go in: a failure is never cached, so a rerun asks again."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        # eviction_policy="none": the default policy silently drops entries past 1 GB, i.e. answers paid for.
        self._cache = diskcache.Cache(str(self.directory), eviction_policy="none", timeout=120)

    def get(self, key: str) -> CachedAnswer | None:
        raw = self._cache.get(key)
        if raw is None:
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValueError:
            logger.warning("cache entry %s in %s is unreadable; it will be asked again", key, self.directory)
            return None

    def put(self, key: str, answer: CachedAnswer) -> None:
        # Each set is its own SQLite transaction: the answer is durable as soon as this returns.
        self._cache.set(key, canonical_json(answer.model_dump(mode="json")))

    def keys(self) -> list[str]:
        return list(self._cache.iterkeys())

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
