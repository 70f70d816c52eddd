"""What a methods section needs to cite a run exactly: hashes, versions, settings, counts.

Two kinds of facts are kept apart. Content-derived facts (hashes of config, codebook and prompts) go
into every table's metadata, so identical inputs give byte-identical tables. Per-run facts (run id,
times, cache hits) go only into the manifest.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
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
    "snakemake-executor-plugin-slurm",
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


def job_place() -> dict[str, str]:
    """Where this job runs, for its shard's metadata: the host and, under SLURM, the scheduler's job id."""
    return {"qualcode.job_host": platform.node(), "qualcode.job_slurm_id": os.environ.get("SLURM_JOB_ID", "")}


def coding_jobs(shard_files: Iterable[str | Path]) -> list[dict[str, str]]:
    """Each shard's coding job: where and when it ran (from the shard's metadata), for the manifest."""
    jobs = []
    for path in shard_files:
        meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
        jobs.append(
            {
                "shard": Path(path).stem,
                "host": meta.get("qualcode.job_host"),
                "slurm_job_id": meta.get("qualcode.job_slurm_id") or None,
                "started_at": meta.get("qualcode.job_started_at"),
                "finished_at": meta.get("qualcode.job_finished_at"),
            }
        )
    return sorted(jobs, key=lambda j: j["shard"])


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
    execution: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to cite the run and check a replay. Never holds the API key: the config
    holds only the name of the variable or file where the key lives. `execution`: where the jobs ran (executor,
    whether coding ran on compute nodes, each coding job's host and scheduler job id)."""
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
        "workflow": git_state(workflow_dir),
        "execution": dict(execution or {}),
        "model": models(tables["llm_calls"]),
        "sampling": {k: cfg.llm.model_dump()[k] for k in ("temperature", "top_p", "max_tokens", "seed")},
        "structured_output": cfg.llm.structured_output,
        "chunking": cfg.chunking.model_dump(),
        "counts": counts(tables),
    }
