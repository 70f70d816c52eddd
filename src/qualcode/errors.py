"""Errors users see. Each message names the file or setting at fault and says what to do."""

from __future__ import annotations


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


class CacheError(QualcodeError):
    """The answer cache (`cache_dir`) cannot be read or written: disk full, corrupt database, no permission.
    The job stops sending; answers received so far are kept in the job's answer journal."""


class LimitReached(QualcodeError):
    """The daily quota or the budget forbids another request. The run stops sending; every answer
    received so far is in the cache, and the next run goes on from there."""

    def __init__(self, message: str, resume_at: str | None = None):
        self.resume_at = resume_at
        super().__init__(message)
