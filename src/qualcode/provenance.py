"""What a methods section needs to cite a run exactly: hashes, versions, settings, counts.

Two kinds of facts are kept apart. Content-derived facts (hashes of config, codebook and prompts) go
into every table's metadata, so identical inputs give byte-identical tables. Per-run facts (run id,
times, cache hits) go only into the manifest.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from . import tables
from .config import Config, content_dict
from .ids import file_sha256, stable_hash, utc_now

if TYPE_CHECKING:  # pandas costs most of a second to import, at every Snakemake start
    import pandas as pd

PACKAGES = (
    "qualcode",
    "snakemake",
    "openai",
    "pydantic",
    "pandas",
    "pyarrow",
    "diskcache",
    "jsonschema",
    "tiktoken",
    "llama-cpp-python",
)


def jobs_started_at(shard_files: Iterable[str | Path]) -> str | None:
    """When the earliest coding job of the run that last wrote these shards started."""
    times = [(pq.read_schema(p).metadata or {}).get(b"qualcode.job_started_at", b"").decode() for p in shard_files]
    return min((t for t in times if t), default=None)


def origin(cfg: Config) -> dict[str, str]:
    """Content hashes written into every table's key-value metadata."""
    return {
        "qualcode.version": _version("qualcode") or "unknown",
        "qualcode.config_sha256": stable_hash(content_dict(cfg)),
        "qualcode.codebook_sha256": file_sha256(cfg.codebook),
        "qualcode.prompt_system_sha256": file_sha256(cfg.prompts["system"]),
        "qualcode.prompt_user_sha256": file_sha256(cfg.prompts["user"]),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{p: _version(p) for p in PACKAGES},
    }


def environment(lock_file: str | Path) -> dict[str, Any]:
    """The exact software environment: the lock file's hash and every installed distribution's version, and the
    packages whose installed version differs from the one the lock pins (none when the environment came from
    `uv sync --frozen`). Without a lock file (a pip or conda install) the versions alone are what can be cited."""
    installed = {
        re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version  # PEP 503 names, as uv.lock writes them
        for d in importlib.metadata.distributions()
    }
    lock = Path(lock_file)
    record: dict[str, Any] = {"lock_file": lock.name, "lock_sha256": None, "packages": dict(sorted(installed.items()))}
    if not lock.is_file():
        record["differs_from_lock"] = None
        return record
    record["lock_sha256"] = file_sha256(lock)
    locked = {p["name"]: p.get("version") for p in tomllib.loads(lock.read_text()).get("package", [])}
    record["differs_from_lock"] = {
        name: {"installed": version, "locked": locked[name]}
        for name, version in sorted(installed.items())
        if name in locked and locked[name] is not None and locked[name] != version
    }
    return record


def git_state(directory: str | Path) -> dict[str, Any] | None:
    """The workflow's commit and whether the checkout had uncommitted changes; None outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "uncommitted_changes": dirty}


def hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    return {str(Path(p).as_posix()): file_sha256(p) for p in sorted(map(str, paths))}


# What the counts and model facts below need of each table: the manifest reads these columns only, never the
# texts, so writing it costs little at any corpus size.
COUNTED_COLUMNS = {
    "documents": ["doc_id"],
    "chunks": ["chunk_id"],
    "codings": ["status"],
    "codes": ["chunk_id", "field", "grounding"],
    "llm_calls": [
        "provider", "base_url", "model_asked", "model_served", "system_fingerprint", "answered_at", "cache_hit",
        "attempts", "reasks", "retries", "tokens_in", "tokens_out", "cost",
    ],
    "failures": ["stage"],
}  # fmt: skip


def read_counted(paths: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    return {name: tables.read(paths[name], name, cols).to_pandas() for name, cols in COUNTED_COLUMNS.items()}


def counts(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Units coded, failures, requests and quotes, from the run's tables."""
    calls, codings, codes, failures = (tables[n] for n in ("llm_calls", "codings", "codes", "failures"))
    sent = calls[~calls.cache_hit]
    quotes = codes[codes.grounding.isin(["exact", "normalised", "ungrounded"])].drop_duplicates(["chunk_id", "field"])
    return {
        "documents": int(len(tables["documents"])),
        "chunks": int(len(tables["chunks"])),
        "chunks_coded": int((codings.status == "coded").sum()),
        "chunks_failed": int((codings.status == "failed").sum()),
        "files_unreadable": int((failures.stage == "ingest").sum()),
        "requests_sent": int(sent.attempts.sum() + sent.retries.sum()),
        "cache_hits": int(calls.cache_hit.sum()),
        "reasks": int(sent.reasks.sum()),
        "retries": int(sent.retries.sum()),
        "quotes": int(len(quotes)),
        "quotes_grounded": int(quotes.grounding.isin(["exact", "normalised"]).sum()),
        "quotes_ungrounded": int((quotes.grounding == "ungrounded").sum()),
        "tokens_in": int(calls.tokens_in.fillna(0).sum()),
        "tokens_out": int(calls.tokens_out.fillna(0).sum()),
        "tokens_in_this_run": int(sent.tokens_in.fillna(0).sum()),
        "tokens_out_this_run": int(sent.tokens_out.fillna(0).sum()),
        "cost": _round(calls.cost.sum(min_count=1)),
        "cost_this_run": _round(sent.cost.sum(min_count=1)),
    }


def _round(x: float) -> float | None:
    return None if x is None or x != x else round(float(x), 6)  # NaN: no price, so no cost


def models(calls: pd.DataFrame) -> dict[str, Any]:
    answered = calls.answered_at.dropna()
    return {
        "provider": sorted(calls.provider.unique().tolist()),
        "base_url": sorted(calls.base_url.unique().tolist()),
        "model_asked": sorted(calls.model_asked.unique().tolist()),
        "models_served": sorted(calls.model_served.dropna().unique().tolist()),
        "system_fingerprints": sorted(calls.system_fingerprint.dropna().unique().tolist()),
        "first_answer_at": answered.min() if len(answered) else None,
        "last_answer_at": answered.max() if len(answered) else None,
    }


def manifest(
    *,
    cfg: Config,
    config_files: Iterable[str | Path],
    inputs: Iterable[str | Path],
    outputs: Mapping[str, str | Path],
    answer_schema: str | Path,
    tables: Mapping[str, pd.DataFrame],
    workflow_dir: str | Path,
    started_at: str | None,
    lock_file: str | Path | None = None,
) -> dict[str, Any]:
    """Everything needed to cite the run and check a replay. Never holds the API key: the config
    holds only the name of the variable or file where the key lives."""
    return {
        "run": {
            "id": uuid.uuid4().hex,
            "started_at": started_at,
            "finished_at": utc_now(),
        },
        "origin": origin(cfg),
        "config": cfg.model_dump(mode="json"),
        "sha256": {
            "config_files": hashes(config_files),
            "codebook": file_sha256(cfg.codebook),
            "prompts": {k: file_sha256(v) for k, v in sorted(cfg.prompts.items())},
            "answer_schema": file_sha256(answer_schema),
            "inputs": hashes(inputs),
            "outputs": {name: file_sha256(p) for name, p in sorted(outputs.items())},
        },
        "software": versions(),
        "environment": environment(lock_file or Path(workflow_dir) / "uv.lock"),
        "workflow": git_state(workflow_dir),
        "model": models(tables["llm_calls"]),
        "sampling": {k: cfg.llm.model_dump()[k] for k in ("temperature", "top_p", "max_tokens", "seed")},
        "structured_output": cfg.llm.structured_output,
        "chunking": cfg.chunking.model_dump(),
        "counts": counts(tables),
    }
