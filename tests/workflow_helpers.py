"""Running the real workflow in a scratch copy of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from qualcode.outputs.tables import PUBLISHED
from qualcode.records import LLMRequest

REPO = Path(__file__).resolve().parent.parent
# The rule that writes the coding tables: a test asserting only on them runs this target, not the whole workflow,
# and so does not wait for validation, exchange, review, the report and the manifest (about 20 s a run here).
CODING = "tables"
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
TABLES = PUBLISHED


def scratch_copy(dest: Path, data: bool = True) -> Path:
    """The workflow files and the example data, without results, caches or environments."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "schemas"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)
    (dest / "profiles").symlink_to("workflow/profiles")  # how snakemake finds workflow/profiles/default
    if (REPO / "uv.lock").is_file():
        shutil.copy2(REPO / "uv.lock", dest / "uv.lock")  # the manifest cites the lock beside the Snakefile
    if data:
        shutil.copytree(REPO / "data" / "raw", dest / "data" / "raw")
    else:
        without_gold(dest)
    return dest


def without_gold(workdir: Path) -> None:
    """The example's human codings are of the example corpus: for another corpus, no validation against them."""
    path = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["validation"]["gold"] = []
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def fake_config(workdir: Path, server, llm: dict | None = None, cache: Path | None = None, **top) -> Path:
    """A config override pointing the workflow at a FakeServer; the key comes from $QUALCODE_TEST_KEY."""
    return write_config(
        workdir,
        {
            "llm": {
                "provider": "openai",
                "base_url": server.base_url,
                "model": "fake-model",
                "structured_output": "json_schema",
                "api_key_env": "QUALCODE_TEST_KEY",
                **(llm or {}),
            },
            "cache_dir": str(cache or workdir / "cache"),
            **top,
        },
    )


def request_key(body: dict, base_url: str, provider: str = "openai") -> str:
    """The cache key (llm_calls.request_hash) of a request, rebuilt from the body an OpenAI-compatible server
    received: the fields a request names are read from the body (one the client left out, such as an unset seed, is
    None), and everything else in it is `extra_body`, which the openai client merges into the body.
    test_coding.py checks this against the hash the coder records, with and without extra_body."""
    # the replicate number is part of the key but never sent: a body rebuilds the first replicate's key (of a chat)
    named = set(LLMRequest.model_fields) - {"provider", "base_url", "extra_body", "replicate", "kind"}
    fields = {name: body.get(name) for name in named}
    extra = {k: v for k, v in body.items() if k not in named}
    return LLMRequest(provider=provider, base_url=base_url, **fields, extra_body=extra).key()


def write_config(workdir: Path, overrides: dict) -> Path:
    path = workdir / "test-config.yaml"
    path.write_text(yaml.safe_dump(overrides))
    return path


def run(workdir: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--cores", "4", *args]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, cwd=workdir, env=full_env, capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def tables(workdir: Path, results: str = "results") -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(workdir / results / f"{name}.parquet") for name in TABLES}


def coding_requests(server) -> int:
    """Chat requests a fake server received, those naming themes (the themes stage, after the coding) left out."""
    from qualcode.analysis.naming import SCHEMA

    from fakeserver import request_schema

    return sum(1 for body in server.requests if request_schema(body) != SCHEMA)


def naming_keys(workdir: Path, results: str = "results") -> set[str]:
    """The cache keys of the themes' naming questions a run answered (themes.names), from the themes job's record
    of them (what the replay archive adds beside the coded chunks); empty when the themes were not named."""
    path = workdir / results / "work/themes/named.jsonl"
    if not path.exists():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["key"] for line in lines if line.strip()}


def assert_invariants(t: dict[str, pd.DataFrame]) -> None:
    """What must hold whatever the model answered."""
    names = ("documents", "chunks", "codings", "codes", "llm_calls", "failures")
    docs, chunks, codings, codes, calls, failures = (t[n] for n in names)
    assert len(docs) > 0 and docs.doc_id.is_unique
    assert chunks.chunk_id.is_unique and set(chunks.doc_id) <= set(docs.doc_id)
    text = dict(zip(docs.doc_id, docs.text, strict=True))
    for c in chunks.itertuples():
        assert text[c.doc_id][c.start : c.end] == c.text
    # every chunk is accounted for: coded, or a row in failures
    assert list(codings.chunk_id) == list(chunks.chunk_id)
    assert set(codings.status) <= {"coded", "failed"}
    failed = set(codings.chunk_id[codings.status == "failed"])
    assert failed == set(failures.chunk_id[failures.stage == "coding"])
    assert len(calls) == len(chunks) and calls.request_hash.str.len().eq(64).all()
    assert set(codes.chunk_id) <= set(codings.chunk_id[codings.status == "coded"])
    grounded = codes[codes.grounded]
    for q in grounded.itertuples():
        assert q.quote_start is not None and 0 <= q.quote_start < q.quote_end <= len(text[q.doc_id])
    # the excerpts: every chunk once, in the chunks' order, with its text and as many codes as codes.parquet has
    excerpts = t["excerpts"]
    assert list(excerpts.chunk_id) == list(chunks.chunk_id) and list(excerpts.text) == list(chunks.text)
    assert sum(len(c) for c in excerpts.codes) == len(codes)
