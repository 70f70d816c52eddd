"""Logging for pipeline jobs: to the rule's log file and to stderr, with errors users can act on.

Secrets (the API key in use) are registered here and blanked out of every log line, whatever module wrote it,
and out of any text that goes into a table (`redact`).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import QualcodeError, storage_errno, storage_message

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[REDACTED]"
_SECRETS: set[str] = set()


def register_secret(secret: str) -> None:
    """Blank `secret` out of every log line and every `redact`ed text from now on in this process."""
    if len(secret) >= 8:  # shorter strings would blank ordinary words; no real key is that short
        _SECRETS.add(secret)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = redact(record.getMessage())
            record.msg, record.args = message, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


@contextmanager
def job(log_path: str | Path | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Set up logging for one job. A QualcodeError ends the job with its message and exit code 1; anything
    else is a bug: its traceback goes to the rule's log (Snakemake points there) and the job exits 1."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    for handler in handlers:
        handler.addFilter(_Redact())
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("qualcode")
    try:
        yield log
    except QualcodeError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except Exception as exc:
        if storage_errno(exc) is None:
            log.exception("unexpected error (a bug in qualcode: please report it with this log)")
        else:  # a full, read-only or failing disk in any stage: not a bug, and the message says which disk
            log.error("%s", _storage_failure(exc, log_path))
        raise SystemExit(1) from None


def _storage_failure(exc: Exception, log_path: str | Path | None) -> str:
    """The file that failed when the error names it; else the file systems the job writes to: the results folder
    (where its log is) and the temporary folder."""
    named = getattr(exc, "filename", None)
    if named:
        return f"{named}: {storage_message(exc, [named])}"
    places = [Path(log_path).parent if log_path else Path.cwd(), tempfile.gettempdir()]
    return f"a write failed: {storage_message(exc, places)}"
