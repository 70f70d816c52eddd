"""Logging for pipeline jobs: to the rule's log file and to stderr, with errors users can act on."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import QualcodeError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def job(log_path: str | Path | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Set up logging for one job. A QualcodeError ends the job with its message and exit code 1;
    anything else keeps its traceback, since it is a bug to report."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    for noisy in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("qualcode")
    try:
        yield log
    except QualcodeError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
