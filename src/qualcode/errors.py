"""Errors users see. Each message names the file or setting at fault and says what to do."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class QualcodeError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(QualcodeError):
    """The configuration, codebook or a prompt template is invalid."""


class InputError(QualcodeError):
    """An input document cannot be read (binary, empty, undecodable, malformed)."""

    def __init__(self, source_file: str, problem: str):
        self.source_file = source_file
        self.problem = problem
        super().__init__(f"{source_file}: {problem}")


class NothingToCode(QualcodeError):
    """No document is left to code, or too many input files could not be read: the run stops, giving the
    reasons, instead of writing empty tables."""


class ProviderError(QualcodeError):
    """The model provider refused the request for a reason retrying cannot fix
    (bad key, unknown model, malformed request). Stops the run."""


class AnswerError(QualcodeError):
    """A model answer is not valid JSON or does not match the answer schema."""

    def __init__(self, message: str, raw: str):
        self.raw = raw
        super().__init__(message)


class RequestError(QualcodeError):
    """One request failed for good (retries exhausted, or refused for this chunk alone).
    The chunk goes to the failures table and the run goes on."""

    def __init__(self, message: str, retries: int = 0, unreachable: bool = False):
        self.retries = retries
        self.unreachable = unreachable  # connection refused or unknown host: likely a wrong llm.base_url
        super().__init__(message)


class BatchPending(QualcodeError):
    """A batch of requests is not answered yet (still running at the provider, or a batch file waiting for its
    answers file): the job stops, nothing is lost, and the next run picks the answers up."""


class CacheError(QualcodeError):
    """The answer cache (`cache_dir`) cannot be read or written: disk full, corrupt database, no permission.
    The job stops sending; answers received so far are kept in the job's answer journal."""


class StorageError(QualcodeError):
    """A file system refused a write: full (ENOSPC), over quota (EDQUOT), read-only (EROFS) or failing (EIO).
    The message names the path, its file system with the bytes free there, and the fix; see `storage_message`."""


class LimitReached(QualcodeError):
    """The daily quota or the budget forbids another request. The run stops sending; every answer
    received so far is in the cache, and the next run goes on from there."""

    def __init__(self, message: str, resume_at: str | None = None):
        self.resume_at = resume_at
        super().__init__(message)


# -- a full, read-only or failing disk: one message for every stage ---------------------------------------------

_STORAGE_FIX = {
    errno.ENOSPC: "free space, then run the same command",
    errno.EDQUOT: "free space (or have your disk quota raised), then run the same command",
    errno.EROFS: "make it writable (or use another disk), then run the same command",
    errno.EIO: "check the disk (failing, or a network disk gone away), free space, then run the same command",
}
# SQLite says "database or disk is full" or "disk I/O error" with its own codes, not errno (primary code: low byte).
_SQLITE_ERRNO = {13: errno.ENOSPC, 10: errno.EIO}  # SQLITE_FULL, SQLITE_IOERR


def storage_errno(exc: BaseException) -> int | None:
    """ENOSPC, EDQUOT, EROFS or EIO when `exc` is a file system refusing a write (an OSError, pyarrow's included, or
    SQLite's error for a full disk or an I/O error); None for anything else."""
    code = getattr(exc, "errno", None)
    if code is None and isinstance(getattr(exc, "sqlite_errorcode", None), int):
        code = _SQLITE_ERRNO.get(exc.sqlite_errorcode & 0xFF)  # type: ignore[attr-defined]
    return code if code in _STORAGE_FIX else None


def file_system(path: str | Path) -> str:
    """`path`'s file system: its mount point and the bytes free there (for an unprivileged user)."""
    path = Path(os.path.abspath(path))
    existing = next((p for p in (path, *path.parents) if p.exists()), Path(path.anchor))
    mount = next(p for p in (existing, *existing.parents) if os.path.ismount(p))
    try:
        free = f"{shutil.disk_usage(existing).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    read_only = hasattr(os, "ST_RDONLY") and _read_only(existing)
    return f"{mount} ({free}{', mounted read-only' if read_only else ''})"


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def storage_message(exc: BaseException, paths: Iterable[str | Path], action: str | None = None) -> str:
    """The message for a write that a full, read-only or failing file system refused: what failed, the file
    system(s) of `paths` with their free bytes, and the fix. `storage_errno(exc)` must be set."""
    code = storage_errno(exc)
    assert code is not None, exc
    action = action or ("read or write" if code == errno.EIO else "write")
    text = str(exc) or type(exc).__name__
    places = list(dict.fromkeys(file_system(p) for p in paths))
    where = f"its file system is {places[0]}" if len(places) == 1 else f"the file systems: {'; '.join(places)}"
    name = errno.errorcode[code]
    return f"cannot {action} ({text}; {name}): {where}; {_STORAGE_FIX[code]}"


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """A failed write names no file (an OSError names one only when opening failed): give it `path`, so the job's
    message says which file and which file system."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and storage_errno(exc) is not None:
            exc.filename = str(path)
        raise
