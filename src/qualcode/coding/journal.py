"""The answer journal: every answer a coding job receives, appended to the job's own file before it goes into
the cache.

One writer per file, append-only, flushed after each answer: an answer paid for survives a killed job and a cache
that cannot be written (disk full, damaged database). The next job that opens the cache absorbs every journal it
finds, so a rerun pays for nothing twice; a job that ends well deletes its own journal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from ..errors import CacheError, StorageError, storage_errno, storage_message
from ..ids import canonical_json
from ..records import CachedAnswer
from .cache import AnswerCache

logger = logging.getLogger(__name__)


class Journal:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: BinaryIO | None = None
        self._torn = False  # the last append failed part-way: the file may end in part of a line

    def append(self, key: str, answer: CachedAnswer) -> None:
        """Durable against a killed process once this returns (written to the OS, not fsync'ed: a per-answer
        fsync would cost more than the answers at high request rates; power loss is the cache's job). Unbuffered,
        so an append that fails (a full disk) leaves nothing pending to be written later or to fail again on close;
        the next append starts on a new line, so only the failed one is lost, never the one after it."""
        line = canonical_json({"request_hash": key, "response": answer.model_dump(mode="json")}) + "\n"
        data = memoryview(("\n" + line if self._torn else line).encode("utf-8"))
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115 (kept open for the job)
            while data:
                data = data[self._fh.write(data) :]
        except OSError as exc:
            self._torn = self._fh is not None
            if storage_errno(exc) is not None:
                raise StorageError(f"answer journal {self.path}: {storage_message(exc, [self.path])}") from None
            raise CacheError(
                f"cannot write the answer journal {self.path} ({exc}): check the disk and run again"
            ) from None
        self._torn = False

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        """Every answer in it is in the cache: the journal is no longer needed."""
        self.close()
        self.path.unlink(missing_ok=True)


def read(path: str | Path) -> Iterator[tuple[str, CachedAnswer]]:
    """The answers in a journal. A line cut short by a kill or a full disk, or otherwise unreadable, is skipped
    with a warning: it never stops the run."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                logger.warning("%s, line %d: incomplete (killed or disk full while writing?); skipped", path, lineno)
                continue
            try:
                entry = json.loads(line)
                yield entry["request_hash"], CachedAnswer.model_validate(entry["response"])
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                logger.warning("%s, line %d: not a journal entry (%s); skipped", path, lineno, type(exc).__name__)


def absorb(directory: str | Path, cache: AnswerCache, finished: Iterable[str] = ()) -> int:
    """Put every journalled answer that the cache lacks into it; returns how many. Journals are left in place
    (only their writer deletes them), so absorbing is safe while other jobs are writing theirs; except the journals
    named in `finished` (by shard): their writers, compute jobs that never open the cache, have ended."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    added = 0
    for path in sorted(directory.glob("*.jsonl")):
        for key, answer in read(path):
            if key not in cache:
                cache.put(key, answer)
                added += 1
    if added:
        logger.info("recovered %d answer(s) from journals in %s into the cache", added, directory)
    for name in finished:
        (directory / f"{name}.jsonl").unlink(missing_ok=True)
    return added


# -- the hand-over to compute jobs, which never open the cache -----------------------------------------------


def hand_over(cache: AnswerCache, keys: Iterable[str], path: str | Path) -> tuple[int, int]:
    """Write the cached answers to these requests to `path` (in the journal's format), for a compute job that must
    not open the cache: it sends only the requests not in the file. Returns (answers handed, requests missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handed = missing = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for key in dict.fromkeys(keys):
            answer = cache.get(key)
            if answer is None:
                missing += 1
                continue
            fh.write(canonical_json({"request_hash": key, "response": answer.model_dump(mode="json")}) + "\n")
            handed += 1
    tmp.replace(path)
    return handed, missing


class HandedAnswers:
    """What a compute job has instead of the cache: the answers handed over by the submit host, and those in the
    job's own journal from an earlier attempt that was killed. It needs no leases: one job per shard at a time, and
    a journal has one writer. New answers go to the journal; the submit host absorbs it into the cache."""

    def __init__(self, *files: str | Path):
        self._answers: dict[str, CachedAnswer] = {}
        for f in files:
            if Path(f).is_file():
                self._answers.update(read(f))

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, key: str) -> CachedAnswer | None:
        return self._answers.get(key)

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._answers[key] = answer

    def claim(self, key: str, owner: str, ttl_s: float, is_stale: object = None) -> bool:
        return True

    def renew(self, keys: list[str], owner: str, ttl_s: float) -> None:
        pass

    def release(self, key: str, owner: str) -> None:
        pass
