"""The records every stage passes on: what a model is asked, what it answered, and what became of each chunk.

The ground floor of the library: it imports nothing of qualcode but ids, so any module may use it. The facts of a
model call are declared once (`CallFacts`) and shared by the cached answer and the chunk's result, so a new fact
is added in one place.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .ids import canonical_json

# -- text that every writer can take ----------------------------------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with every surrogate code point replaced by U+FFFD. JSON's `\\udc80` escapes (and the OS's
    surrogateescape) give Python strings that UTF-8 cannot encode, so Parquet, the cache, the journal and every text
    file would fail on them; a replaced character is visible where it stood and encodes everywhere."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def encodable_json(value: Any) -> Any:
    """A parsed JSON value with `encodable` applied to every string in it, keys included."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {encodable(k): encodable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encodable_json(v) for v in value]
    return value


# -- texts: documents, their speaker turns and chunks (frozen dataclasses: many, small, internal) --------------


@dataclass(frozen=True)
class Turn:
    """A speaker turn: [start, end) character offsets into Document.text, label included."""

    speaker: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """One text to code: a whole file, or one row of a CSV or JSONL file."""

    doc_id: str
    source_file: str
    format: str
    encoding: str
    text: str
    turns: tuple[Turn, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestProblem:
    """A file (or row) that could not be read; it goes to the failures table."""

    source_file: str
    problem: str


@dataclass(frozen=True)
class Chunk:
    """A span of a document: `doc.text[start:end] == text`, with `n_tokens` counted by the configured encoding."""

    chunk_id: str
    doc_id: str
    index: int
    start: int
    end: int
    n_tokens: int
    speakers: tuple[str, ...]
    text: str
    turn_speaker: str | None = None  # the speaker whose turn the chunk starts inside (its label is not in `text`)
    context: dict[str, str] = field(default_factory=dict)  # document metadata chosen for the prompt


@dataclass(frozen=True)
class Completion:
    """One answer as a provider sent it, before validation. `content` is None when the server sent none (null)."""

    content: str | None
    model_served: str | None
    finish_reason: str | None
    tokens_in: int | None
    tokens_out: int | None
    system_fingerprint: str | None
    retries: int = 0  # transient failures retried before this answer
    refusal: str | None = None  # the model declined to answer, in its own words
    tokens_cached: int = 0  # prompt tokens the provider served from its prompt cache (0 where it does not say)
    batch_id: str | None = None  # the provider's batch (or batch file) that answered; None: answered in real time

    def __post_init__(self) -> None:
        # Every string a server sent enters here, whichever client built the record: lone surrogates become U+FFFD
        # once, so no writer downstream meets one. Replaced, not re-asked: the rest of the answer is sound, a re-ask
        # would pay again for what is most likely half an emoji, and a quote holding U+FFFD is still checked
        # against the text (it is found, or flagged ungrounded).
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                object.__setattr__(self, f.name, encodable(value))


# -- model calls and their outcomes (pydantic: they cross the cache, the journal and the archive) --------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMRequest(_Record):
    """Everything that determines an answer. Its hash is the cache key; it never holds the API key."""

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
    # Which repetition of the same request this is (`validation.replicates`): part of the key, never sent. The
    # first is left out of the canonical JSON, so keys (and caches) from before replicates existed stay valid.
    replicate: int = 1
    # Which endpoint answers: "chat" (chat completions) or "embeddings" (`/v1/embeddings`: the one message's content is
    # the text, the answer `{"embedding": [...]}`). Chat is left out of the canonical JSON, so older keys stay valid.
    kind: Literal["chat", "embeddings"] = "chat"

    def canonical(self) -> str:
        """The canonical JSON the key hashes (and the replay archive holds)."""
        left_out = {name for name, default in (("replicate", 1), ("kind", "chat")) if getattr(self, name) == default}
        return canonical_json(self.model_dump(mode="json", exclude=left_out or None))

    def key(self) -> str:
        return hashlib.sha256(self.canonical().encode("utf-8")).hexdigest()


class CallFacts(_Record):
    """How an answer was obtained: kept with it in the cache, the journal, the archive and the llm_calls table."""

    model_served: str | None = None
    system_fingerprint: str | None = None
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    # Of tokens_in, those the provider served from its prompt cache (usage.prompt_tokens_details.cached_tokens), billed
    # at the cached-input price; None for answers cached before this was recorded.
    tokens_cached: int | None = None
    latency_s: float | None = None
    attempts: int = 0  # asks of the model: the first plus re-asks
    reasks: int = 0
    retries: int = 0  # transient errors retried (extra HTTP requests)
    answered_at: str | None = None  # UTC time of the original answer
    batch_id: str | None = None  # the batch that answered (`llm.mode: batch` or `batch_files`); None: in real time


class CachedAnswer(CallFacts):
    """A validated answer, as the cache, the journal and the replay archive hold it."""

    answer: dict[str, Any]
    raw: str

    def facts(self) -> dict[str, Any]:
        return self.model_dump(include=set(CallFacts.model_fields))


class ChunkResult(CallFacts):
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
    cache_hit: bool

    def to_row(self) -> dict[str, Any]:
        return self.model_dump()

    def cached_answer(self) -> CachedAnswer:
        """The answer as the cache holds it (a coded result carries every fact of it)."""
        return CachedAnswer(
            answer=json.loads(self.answer_json or "null"),
            raw=self.raw or "",
            **self.model_dump(include=set(CallFacts.model_fields)),
        )
