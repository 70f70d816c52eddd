"""The replay archive: every request of a run and its validated answer, keyed by request hash.

Published beside a paper, it lets anyone rebuild the exact tables with no model and no key:
import it into an empty cache and run the workflow. The file is gzipped JSON Lines, sorted by hash and
written with a fixed gzip timestamp, so the same answers always give the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from .cache import AnswerCache, CachedAnswer, LLMRequest
from .errors import ConfigError
from .ids import canonical_json

logger = logging.getLogger(__name__)

FORMAT = "qualcode-replay-archive/1"


def export(requests: Iterable[LLMRequest], cache: AnswerCache, path: str | Path) -> tuple[int, int]:
    """Write the cached answer of each request. Returns (exported, missing): a request without a
    cached answer (a failure) is not exported."""
    entries: dict[str, str] = {}
    missing = 0
    for req in requests:
        key = req.key()
        hit = cache.get(key)
        if hit is None:
            missing += 1
            continue
        entries[key] = canonical_json(
            {
                "format": FORMAT,
                "request_hash": key,
                "request": req.model_dump(mode="json"),
                "response": hit.model_dump(mode="json"),
            }
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        for key in sorted(entries):
            gz.write(entries[key].encode("utf-8") + b"\n")
    return len(entries), missing


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
                except (json.JSONDecodeError, KeyError, ValidationError) as exc:
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
