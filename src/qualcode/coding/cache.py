"""The answer cache: validated answers keyed by the hash of everything that determines them.

diskcache is SQLite underneath: safe for several processes on a local disk, not on NFS or Lustre.
Values are stored as JSON text, not pickles, so a cache stays readable by any later version.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import diskcache

from ..errors import CacheError, storage_errno, storage_message
from ..ids import canonical_json
from ..records import CachedAnswer

try:
    import fcntl
except ImportError:  # Windows: caches are opened without the lock of `_one_opener`
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


_forbidden: str | None = None


def forbid(reason: str) -> None:
    """From now on this process may not open the cache or the limits ledger (SQLite: unsafe when a job on another
    host opens the same files). Called first thing by coding jobs that run on compute nodes; opening either then
    fails loudly instead of silently risking the database."""
    global _forbidden
    _forbidden = reason


def check_allowed(what: str, directory: str | Path) -> None:
    if _forbidden is not None:
        raise CacheError(f"{what} {directory} must not be opened here: {_forbidden}")


class AnswerCache:
    """Only validated answers go in: a failure is never cached, so a rerun asks again.

    Every SQLite failure (disk full, corrupt file, no permission) becomes a CacheError naming `cache_dir`.
    Leases (`claim`) let processes that share one cache agree on who sends a request, so two runs pay once.
    """

    def __init__(self, directory: str | Path):
        check_allowed("cache_dir", directory)
        self.directory = Path(directory)
        db = self.directory / "cache.db"
        with self._errors("open"), _one_opener(self.directory):
            if db.is_file() and db.stat().st_size == 0:
                logger.warning(
                    "cache_dir: %s is an empty file, not a cache: every answer will be asked again (was the cache "
                    "copied while in use, or the disk full?); restore it from a backup or a replay archive "
                    "(`qualcode import-archive`) to avoid paying twice",
                    db,
                )
            # eviction_policy="none": the default policy silently drops entries past 1 GB, i.e. answers paid for.
            self._cache = diskcache.Cache(str(self.directory), eviction_policy="none", timeout=120)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, diskcache.Timeout, OSError) as exc:
            raise CacheError(_explain(self.directory, action, exc)) from None

    def get(self, key: str) -> CachedAnswer | None:
        with self._errors("read"):
            raw = self._cache.get(key)
        if raw is None:
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValueError:
            logger.warning("cache entry %s in %s is unreadable; it will be asked again", key, self.directory)
            return None

    def __contains__(self, key: str) -> bool:
        with self._errors("read"):
            return key in self._cache

    def put(self, key: str, answer: CachedAnswer) -> None:
        # Each set is its own SQLite transaction: the answer is durable as soon as this returns.
        with self._errors("store an answer in"):
            self._cache.set(key, canonical_json(answer.model_dump(mode="json")))

    # -- leases: who sends a request, when several processes share this cache ----------------------------

    def claim(self, key: str, owner: str, ttl_s: float, is_stale: Callable[[str], bool] | None = None) -> bool:
        """Take the lease on request `key` for `ttl_s` seconds; False while another owner holds it. A lease left
        by a killed process expires, or is taken over at once when `is_stale(holder)` says its holder is gone."""
        with self._errors("write a lease in"), self._cache.transact():
            holder = self._cache.get(_LEASE + key)
            if holder is not None and holder != owner and not (is_stale and is_stale(holder)):
                return False
            self._cache.set(_LEASE + key, owner, expire=ttl_s)
            return True

    def renew(self, keys: list[str], owner: str, ttl_s: float) -> None:
        """Extend the leases this owner holds (a long request keeps its claim while it is being answered)."""
        with self._errors("write a lease in"), self._cache.transact():
            for key in keys:
                if self._cache.get(_LEASE + key) == owner:
                    self._cache.touch(_LEASE + key, expire=ttl_s)

    def release(self, key: str, owner: str) -> None:
        with self._errors("write a lease in"), self._cache.transact():
            if self._cache.get(_LEASE + key) == owner:
                self._cache.delete(_LEASE + key)

    def keys(self) -> list[str]:
        with self._errors("read"):
            return [k for k in self._cache.iterkeys() if not k.startswith(_LEASE)]

    def __len__(self) -> int:
        return len(self.keys())

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> AnswerCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LEASE = "lease:"


@contextmanager
def _one_opener(directory: Path) -> Iterator[None]:
    """Processes open the cache one at a time (a lock on its directory). SQLite creates a new cache.db empty and
    fills it a moment later: without this, a second run opening the same new cache at that moment would warn
    that its cache.db is empty. Where there are no file locks, opening goes on unlocked."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        with suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _explain(directory: Path, action: str, exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if storage_errno(exc) is not None:
        return f"cache_dir {directory}: {storage_message(exc, [directory], f'{action} the answer cache')}"
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        fix = (
            f"the cache is damaged: move {directory} aside and run again; answers then come from the model "
            "again, or first restore them with `qualcode import-archive results/replay/answers.jsonl.gz`"
        )
    elif isinstance(exc, PermissionError) or "readonly" in text or "permission" in text.lower():
        fix = "make it writable for this user, or point cache_dir elsewhere"
    elif isinstance(exc, diskcache.Timeout) or "locked" in text:
        fix = "another process holds it locked: is cache_dir on a network file system (NFS, Lustre)? use a local disk"
    else:
        fix = "check the disk and the directory, then run again"
    return f"cache_dir {directory}: cannot {action} the answer cache ({text}): {fix}"
