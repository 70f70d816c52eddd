"""Logging for pipeline jobs: to the rule's log file and to stderr, with errors users can act on.

Secrets (the API key in use) are registered here and blanked out of every log line, whatever module wrote it,
and out of any text that goes into a table (`redact`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import QualcodeError

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
    except Exception:
        log.exception("unexpected error (a bug in qualcode: please report it with this log)")
        raise SystemExit(1) from None
