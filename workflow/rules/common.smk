# Validate the config and codebook before any rule runs, and define the input functions.

from pathlib import Path

from snakemake.utils import validate

import qualcode.codebook
import qualcode.config
import qualcode.ingest
import qualcode.provenance
import qualcode.shards
import qualcode.tables

# pydantic first: its messages name the setting in one line; then the JSON Schema, as published.
CFG = qualcode.config.resolve(
    config, "config (config/config.yaml and any --configfile)"
)
validate(config, "../../schemas/config.schema.json")
RESULTS = CFG.results_dir
CONFIG_FILES = [str(p) for p in workflow.configfiles]
TABLES = qualcode.tables.PUBLISHED

_codebook_raw = qualcode.codebook.read(CFG.codebook)
CODEBOOK = qualcode.codebook.parse(_codebook_raw, CFG.codebook)
validate(_codebook_raw, "../../schemas/codebook.schema.json")
# Content hashes stamped into every table (byte-identical tables for identical inputs).
ORIGIN = qualcode.provenance.origin(CFG)

# The inputs reach Snakemake only as a listing (names, sizes, times; nothing is read or hashed), never as file
# names of its own: braces in a name would be wildcards, and a name that is not UTF-8 would crash it. The main
# process rewrites the listing only when it changed, so its time tells Snakemake to ingest again.
INPUT_FILES = qualcode.ingest.list_inputs(
    Path(CFG.ingest.input_dir), CFG.ingest.include
)
if not INPUT_FILES:
    raise qualcode.config.ConfigError(
        f"ingest: no files in {CFG.ingest.input_dir} match {CFG.ingest.include}"
    )
INPUT_LISTING = f"{RESULTS}/work/inputs.json"
if workflow.is_main_process:
    qualcode.ingest.write_listing(
        INPUT_LISTING, Path(CFG.ingest.input_dir), INPUT_FILES
    )

# Jobs go to a cluster: this is the main process with a cluster executor (SLURM), or a job it submitted (which must
# build the same rules as the process that submitted it). On one machine everything runs in place.
ON_CLUSTER = not workflow.local_exec or workflow.remote_exec
# Coding jobs on compute nodes never open the cache or the limits ledger (SQLite, unsafe across hosts): local rules
# on the submit host hand them the cached answers and absorb their journals. Else coding jobs are local rules.
CODING_ON_COMPUTE = CFG.coding_on_compute(ON_CLUSTER)
EXECUTION = {
    "executor": workflow.executor_plugin.name if workflow.executor_plugin else "local",
    "coding": "compute" if CODING_ON_COMPUTE else "submit_host",
}


wildcard_constraints:
    shard=r"[0-9a-f]{12}",


def shard_ids():
    """The shards' names, in the chunks' order; known once the chunk checkpoint has run. A name is a hash of the
    shard's chunk ids, so a shard whose chunks did not change keeps its name and its finished output.
    """
    return [s.name for s in qualcode.shards.read(checkpoints.chunk.get().output.shards)]


def coded_shards(wildcards):
    return expand(f"{RESULTS}/work/shards/{{shard}}.parquet", shard=shard_ids())


def final_outputs(wildcards):
    absorbed = [f"{RESULTS}/work/journal/absorbed.json"] if CODING_ON_COMPUTE else []
    return [f"{RESULTS}/{name}.parquet" for name in TABLES] + absorbed + [
        f"{RESULTS}/codings.csv",
        f"{RESULTS}/codebook/answer.schema.json",
        f"{RESULTS}/replay/answers.jsonl.gz",
        f"{RESULTS}/manifest.json",
        f"{RESULTS}/methods.md",
        *rules.report_plots.output,
    ]
