"""Logging for pipeline jobs: to the rule's log file and to stderr, with errors users can act on.

Secrets (the API key in use, credentials in llm.base_url) are registered here and blanked out of every log line,
whatever module wrote it, and out of any text that goes into a table (`redact`), in whatever encoding they arrive.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import QualcodeError, storage_errno, storage_message

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[REDACTED]"
_SECRETS: dict[str, re.Pattern[str]] = {}


def register_secret(secret: str) -> None:
    """Blank `secret` out of every log line and every `redact`ed text from now on in this process."""
    if len(secret) >= 8 and secret not in _SECRETS:  # shorter would blank ordinary words; no real key is that short
        _SECRETS[secret] = _pattern(secret)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by [REDACTED], written plainly or encoded: an echo of a key by a
    server or a model may escape any of its characters (`\\u0073k-...`, `%73k-...`, `&#115;k-...`, in JSON inside
    JSON too) or be base64."""
    for pattern in _SECRETS.values():
        text = pattern.sub(REDACTED, text)
    return text


def _hex(n: int, width: int) -> str:
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{n:0{width}x}")


def _char_forms(ch: str) -> str:
    """A regular expression for one character of a secret, in each encoding it may be written in."""
    code = ord(ch)
    units = [code] if code < 0x10000 else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)]
    forms = [
        re.escape(ch),
        "".join(rf"\\+u{_hex(u, 4)}" for u in units),  # JSON's \uXXXX, any number of backslashes
        "".join(f"%(?:25)*{_hex(b, 2)}" for b in ch.encode("utf-8")),  # percent-encoded, once or more
        f"&#(?:0*{code}|[xX]0*{_hex(code, 1)});?",  # an HTML character reference
    ]
    if ch in '"\\/':
        forms.append(r"\\+" + re.escape(ch))  # JSON's short escapes
    return "(?:" + "|".join(forms) + ")"


def _base64_forms(secret: str) -> list[str]:
    """The runs of base64 characters that encode `secret` wherever it starts in the encoded bytes (3 alignments),
    standard and URL-safe: the characters that also depend on neighbouring bytes are left out."""
    raw, found = secret.encode("utf-8"), []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        core = encoded[-(-shift * 8 // 6) : (shift + len(raw)) * 8 // 6]
        found += [core, core.replace("+", "-").replace("/", "_")]
    return [re.escape(f) for f in dict.fromkeys(found) if len(f) >= 8]


def _pattern(secret: str) -> re.Pattern[str]:
    return re.compile("|".join(["".join(_char_forms(c) for c in secret), *_base64_forms(secret)]))


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
