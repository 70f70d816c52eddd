"""The replay archive: every request of a run and its validated answer, keyed by request hash: the run's own coding,
its replicates and its arms (`validation`), everything a table is built from.

Published beside a paper, it lets anyone rebuild the exact tables with no model and no key:
import it into an empty cache and run the workflow. The file is gzipped JSON Lines, sorted by hash and
written with a fixed gzip timestamp, so the same answers always give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import ValidationError

from ..errors import ConfigError, QualcodeError
from ..ids import canonical_json
from ..records import CachedAnswer, Chunk, ChunkResult, LLMRequest
from .cache import AnswerCache

logger = logging.getLogger(__name__)

FORMAT = "qualcode-replay-archive/1"


def entry(request_json: str, key: str, answer: CachedAnswer) -> str:
    """One archive line: the canonical JSON of {format, request, request_hash, response}, put together from the
    request's canonical JSON (already made to hash it) rather than encoding the request a second time."""
    response = canonical_json(answer.model_dump(mode="json"))
    return f'{{"format":"{FORMAT}","request":{request_json},"request_hash":"{key}","response":{response}}}'


def export(pairs: Iterable[tuple[LLMRequest, CachedAnswer, str | None]], path: str | Path) -> int:
    """Write each request with its answer, sorted by request hash; returns how many distinct requests were written.
    Entries wait in a temporary file, not in memory, so an archive of any size is written in bounded memory."""
    index: dict[str, tuple[int, int]] = {}  # request hash -> (offset, length) in the temporary file
    with tempfile.TemporaryFile() as tmp:
        for req, answer, expected in pairs:
            request_json = req.canonical()
            key = hashlib.sha256(request_json.encode("utf-8")).hexdigest()
            if expected is not None and key != expected:
                raise QualcodeError(
                    f"request {expected}: the request rebuilt from the current chunks and settings hashes to {key}, "
                    "so the replay archive would not match the run; rerun the coding jobs (snakemake --forcerun "
                    "code_shard code_variant)"
                )
            if key in index:  # the same text twice in the corpus: one request, one entry
                continue
            line = (entry(request_json, key, answer) + "\n").encode("utf-8")
            index[key] = (tmp.tell(), len(line))
            tmp.write(line)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            for key in sorted(index):
                offset, length = index[key]
                tmp.seek(offset)
                gz.write(tmp.read(length))
    return len(index)


def from_results(
    results: Iterable[ChunkResult], chunks: Iterable[Chunk], requests: Callable[[Chunk], LLMRequest]
) -> list[tuple[LLMRequest, CachedAnswer, str]]:
    """Every coded chunk's request and answer, taken from the coding jobs' own outputs (not the cache, which may
    have been moved or deleted), so the archive is complete by construction. A coded result that lacks its chunk
    or its answer stops here, and one whose request no longer hashes as recorded stops `export`: never a short
    archive, nor one that does not match the run."""
    by_id = {c.chunk_id: c for c in chunks}
    pairs = []
    for r in results:
        if r.status != "coded":
            continue
        chunk = by_id.get(r.chunk_id)
        req = requests(chunk) if chunk is not None else None
        if req is None or r.answer_json is None:
            raise QualcodeError(
                f"chunk {r.chunk_id}: its coding result does not match the current chunks and settings (or has no "
                "answer), so the replay archive would be incomplete; rerun the coding jobs "
                "(snakemake --forcerun code_shard code_variant)"
            )
        pairs.append((req, r.cached_answer(), r.request_hash))
    return pairs


def import_(path: str | Path, cache: AnswerCache) -> int:
    """Load an archive into a cache, checking that each request hashes to its recorded key."""
    path = Path(path)
    n = 0
    try:
        with gzip.open(path, "rb") as gz:
            for lineno, line in enumerate(io.TextIOWrapper(gz, encoding="utf-8"), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    req = LLMRequest.model_validate(entry["request"])
                    answer = CachedAnswer.model_validate(entry["response"])
                    canonical_json(entry).encode("utf-8")  # a `\udc80` escape gives text no cache can store
                except (json.JSONDecodeError, KeyError, ValidationError, UnicodeEncodeError) as exc:
                    raise ConfigError(f"{path}, line {lineno}: not a qualcode archive entry ({exc})") from None
                if req.key() != entry.get("request_hash"):
                    raise ConfigError(f"{path}, line {lineno}: the request does not match its hash; file altered?")
                cache.put(req.key(), answer)
                n += 1
    except FileNotFoundError:
        raise ConfigError(f"{path}: archive not found") from None
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable gzip file ({exc})") from None
    logger.info("imported %d answers from %s into %s", n, path, cache.directory)
    return n
