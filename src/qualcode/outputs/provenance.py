"""What a methods section needs to cite a run exactly: hashes, versions, settings, counts.

Two kinds of facts are kept apart. Content-derived facts (hashes of config, codebook and prompts) go
into every table's metadata, so identical inputs give byte-identical tables. Per-run facts (run id,
times, cache hits) go only into the manifest.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import tomllib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from ..config import LOCAL_DEMO_MODEL, Config, content_dict
from ..ids import file_sha256, stable_hash, utc_now
from . import tables

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
    # A name can be locked at several versions, one per Python range (numpy for 3.11 and for 3.12+, say).
    locked: dict[str, set[str]] = {}
    for package in tomllib.loads(lock.read_text()).get("package", []):
        if package.get("version"):
            locked.setdefault(package["name"], set()).add(package["version"])
    record["differs_from_lock"] = {
        name: {"installed": version, "locked": sorted(locked[name])}
        for name, version in sorted(installed.items())
        if name in locked and version not in locked[name]
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


def keep_out_of_git(input_dir: str | Path) -> str | None:
    """If `input_dir` is inside a git checkout and git would track the files in it, write a `.gitignore` there that
    ignores everything, so participants' data are not committed by accident; returns what was done, or None.
    Files git already tracks (the example corpus) stay tracked; qualcode skips hidden files, so the .gitignore is
    never read as input."""
    directory = Path(input_dir)
    if not directory.is_dir() or (directory / ".gitignore").exists():
        return None

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=30)

    try:
        if git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
            return None
        probe = "qualcode-probe-of-a-new-file.txt"
        if git("check-ignore", "-q", probe).returncode == 0:
            return None  # already ignored (the repository's .gitignore ignores data/)
        tracked = git("ls-files", ".").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if tracked:
        return None  # a folder of tracked files (the bundled example) is the repository's, not a participant's
    (directory / ".gitignore").write_text(
        "# Written by qualcode: research data stay out of git. Remove this file only if the data may be public.\n*\n",
        encoding="utf-8",
    )
    return f"{directory} is inside a git checkout: wrote {directory / '.gitignore'} so that git ignores its files"


class RunDescription(Mapping[str, Any]):
    """What the report's text says of the run (model, input_dir, codebook, results_dir, demo_model), from the
    manifest the run wrote, read when the text is first rendered, or failing that from the configuration given.
    `snakemake --report` is often given other settings than the run was (none, or another --configfile): its text
    described the default configuration beside the run's figures."""

    def __init__(self, manifest_path: str | Path, cfg: Config):
        self._path = str(manifest_path)
        self._given = cfg.model_dump(mode="json")
        self._facts: dict[str, Any] | None = None

    @staticmethod
    def _facts_of(used: dict[str, Any]) -> dict[str, Any]:
        llm = used["llm"]
        return {
            "model": llm["model"],
            "input_dir": used["ingest"]["input_dir"],
            "codebook": used["codebook"],
            "results_dir": used["results_dir"],
            "demo_model": llm["provider"] == "local" and llm["model"] == LOCAL_DEMO_MODEL,
        }

    def _load(self) -> dict[str, Any]:
        if self._facts is None:
            try:
                self._facts = self._facts_of(json.loads(Path(self._path).read_text(encoding="utf-8"))["config"])
            except (OSError, ValueError, KeyError, TypeError):
                self._facts = self._facts_of(self._given)
        return self._facts

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        # Snakemake pickles the config into every script job: a plain dict of the settings given, so that a job
        # neither reads the manifest nor imports this module to unpickle it (no job reads these values)
        return dict, (self._facts_of(self._given),)

    def __getitem__(self, key: str) -> Any:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def record_holdout_scoring(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one scoring of the holdout (validation.holdout_log): a line of JSON, never rewritten, kept outside
    the results so that deleting them does not erase that the holdout was seen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dict(record), sort_keys=True) + "\n")


def holdout_scorings(path: str | Path) -> list[dict[str, Any]]:
    """Every scoring of the holdout recorded in validation.holdout_log (none if there is no such file)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def holdout(cfg: Config) -> dict[str, Any]:
    """The manifest's record of the holdout: its settings, the lock, and every scoring with its config hash."""
    v = cfg.validation
    scorings = holdout_scorings(v.holdout_log)
    return {
        "share": v.holdout,
        "seed": v.holdout_seed,
        "lock": v.lock,
        "log": v.holdout_log,
        "scorings": scorings,
        "configurations": sorted({s["config_sha256"] for s in scorings}),
    }


def hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    return {str(Path(p).as_posix()): file_sha256(p) for p in sorted(map(str, paths))}


# What the counts and model facts below need of each table: the manifest reads these columns only, never the
# texts, so writing it costs little at any corpus size.
COUNTED_COLUMNS = {
    "documents": ["doc_id"],
    "chunks": ["chunk_id"],
    "codings": ["status", "empty_fields"],
    "codes": ["chunk_id", "field", "grounding"],
    "llm_calls": [
        "provider", "base_url", "model_asked", "model_served", "system_fingerprint", "answered_at", "cache_hit",
        "attempts", "reasks", "retries", "tokens_in", "tokens_out", "tokens_cached", "cost", "batch_id",
    ],
    "failures": ["stage"],
}  # fmt: skip


def read_counted(paths: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    return {name: tables.read(paths[name], name, cols).to_pandas() for name, cols in COUNTED_COLUMNS.items()}


def counts(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Units coded, failures, requests and quotes, from the run's tables."""
    calls, codings, codes, failures = (tables[n] for n in ("llm_calls", "codings", "codes", "failures"))
    sent = calls[~calls.cache_hit]
    # one quote per chunk and field, as the codebook asks for it (see codes_rows_by_grounding below)
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
        # quotes_* count one quote per chunk and field; codes.parquet has a row per value, each carrying its
        # field's quote, so its rows by grounding are given too, under the name that says what they count
        "codes_rows_by_grounding": {str(k): int(v) for k, v in codes.grounding.value_counts().sort_index().items()},
        "answers_empty": _empty_answers(codings),
        "tokens_in": int(calls.tokens_in.fillna(0).sum()),
        "tokens_out": int(calls.tokens_out.fillna(0).sum()),
        "tokens_in_this_run": int(sent.tokens_in.fillna(0).sum()),
        "tokens_out_this_run": int(sent.tokens_out.fillna(0).sum()),
        # of tokens_in, those the provider served from its prompt cache (billed at prices' cached_input)
        "tokens_cached": int(calls.tokens_cached.fillna(0).sum()),
        "tokens_cached_this_run": int(sent.tokens_cached.fillna(0).sum()),
        # what was paid: cached input and batch answers at their own prices (config's prices)
        "cost": _round(calls.cost.sum(min_count=1)),
        "cost_this_run": _round(sent.cost.sum(min_count=1)),
        **_modes(calls),
    }


def _modes(calls: pd.DataFrame) -> dict[str, Any]:
    """How the answers were obtained: one request at a time (realtime) or through a provider's Batch API, and
    which batches. Calls that received no answer are counted nowhere."""
    answered = calls[calls.answered_at.notna()]
    batch = answered.batch_id.notna()
    return {  # the mode configured is the manifest's `requests.mode`
        "answers_realtime": int((~batch).sum()),
        "answers_batch": int(batch.sum()),
        "batch_ids": sorted(answered.batch_id.dropna().unique().tolist()),
    }


def _empty_answers(codings: pd.DataFrame) -> dict[str, int]:
    """Empty answers of the coded chunks, by field (codings.empty_fields)."""
    if "empty_fields" not in codings:
        return {}
    found: dict[str, int] = {}
    for fields in codings.empty_fields.dropna():
        for name in fields:
            found[name] = found.get(name, 0) + 1
    return dict(sorted(found.items()))


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


def batches(cfg: Config, calls: pd.DataFrame) -> dict[str, Any]:
    """How the answers travelled: the mode configured, and the batches that answered this run's requests (those of
    every answer the tables hold, cached ones included, are `counts.batch_ids`)."""
    sent = calls[~calls.cache_hit]
    return {"mode": cfg.llm.mode, "batch_ids_sent": sorted(sent.batch_id.dropna().unique().tolist())}


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
        "environment": environment(lock_file or Path(workflow_dir) / "uv.lock"),
        "workflow": git_state(workflow_dir),
        "execution": dict(execution or {}),
        "model": models(tables["llm_calls"]),
        "requests": batches(cfg, tables["llm_calls"]),
        "sampling": {k: cfg.llm.model_dump()[k] for k in ("temperature", "top_p", "max_tokens", "seed")},
        "structured_output": cfg.llm.structured_output,
        "chunking": cfg.chunking.model_dump(),
        "counts": counts(tables),
        "holdout": holdout(cfg),
    }
