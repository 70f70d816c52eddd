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
VALIDATION_TABLES = qualcode.tables.VALIDATION

# A missing human codings file is named by its setting before any job runs (Snakemake would only say that the
# validate rule lacks an input).
for _gold in CFG.validation.gold:
    if not Path(_gold).is_file():
        raise qualcode.config.ConfigError(
            f"validation.gold: {_gold} not found (paths are relative to the working directory)"
        )

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


wildcard_constraints:
    shard=r"[0-9a-f]{12}",
    variant=r"[a-z0-9_]+\.r[0-9]+|r[0-9]+",
    arm=r"[a-z][a-z0-9_]*",


# validation.replicates and validation.arms: each further coding of the chunks, by name: (arm or None, replicate)
VARIANTS = qualcode.config.variants(CFG)


def shard_ids():
    """The shards' names, in the chunks' order; known once the chunk checkpoint has run. A name is a hash of the
    shard's chunk ids, so a shard whose chunks did not change keeps its name and its finished output.
    """
    return [s.name for s in qualcode.shards.read(checkpoints.chunk.get().output.shards)]


def coded_shards(wildcards):
    return expand(f"{RESULTS}/work/shards/{{shard}}.parquet", shard=shard_ids())


def variant_llm(wildcards):
    return qualcode.config.arm_llm(CFG, VARIANTS[wildcards.variant][0])


def variant_prompts(wildcards):
    return qualcode.config.arm_prompts(CFG, VARIANTS[wildcards.variant][0])


def variant_shards(wildcards):
    return expand(
        f"{RESULTS}/work/variants/{{variant}}/{{shard}}.parquet",
        variant=list(VARIANTS),
        shard=shard_ids(),
    )


def final_outputs(wildcards):
    return [f"{RESULTS}/{name}.parquet" for name in (*TABLES, *VALIDATION_TABLES)] + [
        f"{RESULTS}/codings.csv",
        f"{RESULTS}/codebook/answer.schema.json",
        f"{RESULTS}/replay/answers.jsonl.gz",
        f"{RESULTS}/manifest.json",
        f"{RESULTS}/methods.md",
        *rules.report_plots.output,
        *rules.report_validation.output,
        *expand(
            f"{RESULTS}/arms/{{arm}}/{{name}}.parquet",
            arm=list(CFG.validation.arms),
            name=TABLES,
        ),
        *rules.qdpx_export.output,
        *rules.review_page.output,
        *(rules.apply_corrections.output if CFG.review.corrections else []),
    ]
