# Validate the config and codebook before any rule runs, and define the input functions.

import math
from pathlib import Path

import pyarrow.parquet as pq
from snakemake.utils import validate

import qualcode.codebook
import qualcode.config
import qualcode.ingest
import qualcode.provenance

# pydantic first: its messages name the setting in one line; then the JSON Schema, as published.
CFG = qualcode.config.resolve(
    config, "config (config/config.yaml and any --configfile)"
)
validate(config, "../../schemas/config.schema.json")
RESULTS = CFG.results_dir
CONFIG_FILES = [str(p) for p in workflow.configfiles]
TABLES = ("documents", "chunks", "codings", "codes", "llm_calls", "failures")

_codebook_raw = qualcode.codebook.read(CFG.codebook)
CODEBOOK = qualcode.codebook.parse(_codebook_raw, CFG.codebook)
validate(_codebook_raw, "../../schemas/codebook.schema.json")
# Content hashes stamped into every table (byte-identical tables for identical inputs).
ORIGIN = qualcode.provenance.origin(CFG)

INPUTS = qualcode.ingest.discover(Path(CFG.ingest.input_dir), CFG.ingest.include)
if not INPUTS:
    raise qualcode.config.ConfigError(
        f"ingest: no files in {CFG.ingest.input_dir} match {CFG.ingest.include}"
    )


wildcard_constraints:
    shard=r"\d{5}",


def shard_ids():
    """Shards of `coding.shard_size` chunks; known once the chunk checkpoint has run."""
    n = pq.read_metadata(checkpoints.chunk.get().output.chunks).num_rows
    return [f"{i:05d}" for i in range(math.ceil(n / CFG.coding.shard_size))]


def coded_shards(wildcards):
    return expand(f"{RESULTS}/work/shards/{{shard}}.parquet", shard=shard_ids())


def final_outputs(wildcards):
    return [f"{RESULTS}/{name}.parquet" for name in TABLES] + [
        f"{RESULTS}/codings.csv",
        f"{RESULTS}/codebook/answer.schema.json",
        f"{RESULTS}/replay/answers.jsonl.gz",
        f"{RESULTS}/manifest.json",
        f"{RESULTS}/methods.md",
        *rules.report_plots.output,
    ]
