# Validate the config and codebook before any rule runs, and define the input functions.

import os
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

import qualcode.inputs.codebook
import qualcode.config
import qualcode.inputs.ingest
import qualcode.preflight
import qualcode.outputs.provenance
import qualcode.shards
import qualcode.outputs.tables

# pydantic first: its messages name the setting in one line; then the JSON Schema, as published.
# In the order they override one another: the Snakefile's configfile, then each --configfile.
_OVERRIDES = [str(p) for p in workflow.overwrite_configfiles or []]
CONFIG_FILES = [
    str(p) for p in workflow.configfiles if str(p) not in _OVERRIDES
] + _OVERRIDES
CFG = qualcode.config.resolve(
    config, "config (config/config.yaml, any --configfile and --config)", CONFIG_FILES
)
validate(config, "../../schemas/config.schema.json")
# The example's human codings do not follow a --configfile that moves ingest.input_dir to a researcher's own data.
CFG, _left_out = qualcode.config.without_example_gold(
    CFG,
    [(str(p), qualcode.config.read_yaml(p, "config file") or {}) for p in CONFIG_FILES]
    + [("--config", dict(getattr(workflow.config_settings, "config", None) or {}))],
)
if _left_out and workflow.is_main_process:
    logger.warning(_left_out)
RESULTS = CFG.results_dir
TABLES = qualcode.outputs.tables.PUBLISHED
VALIDATION_TABLES = qualcode.outputs.tables.VALIDATION
THEME_TABLES = qualcode.outputs.tables.THEME_TABLES


# `snakemake propose` needs no codebook (it proposes one): only then may the codebook file be missing. Snakemake
# knows its targets only once the workflow is parsed, so they are read from its command line here.
def _only_targets(names):
    """Whether snakemake was asked for these targets alone (False when its command line cannot be read: the codebook
    is then required, as for any other target)."""
    from snakemake.cli import get_argument_parser

    try:
        args, _ = get_argument_parser().parse_known_args(sys.argv[1:])
    except (SystemExit, Exception):
        return False
    return bool(args.targets) and set(args.targets) <= set(names)


PROPOSING = _only_targets({"propose", "propose_codebook"})
if Path(CFG.codebook).is_file() or (not PROPOSING and workflow.is_main_process):
    _codebook_raw = qualcode.inputs.codebook.read(CFG.codebook)
    CODEBOOK = qualcode.inputs.codebook.parse(_codebook_raw, CFG.codebook)
    validate(_codebook_raw, "../../schemas/codebook.schema.json")
else:
    CODEBOOK = None
# Content hashes stamped into every table (byte-identical tables for identical inputs); without a codebook (propose
# only), that of an empty file.
ORIGIN = qualcode.outputs.provenance.origin(
    CFG if CODEBOOK is not None else CFG.model_copy(update={"codebook": os.devnull})
)

# Whatever can stop the run is found now, before any request (`qualcode check` runs the same): a missing .gguf
# file, no inputs, human codings that cannot be read or name none of the listed files. The inputs reach Snakemake
# only as a listing (names, sizes, times; nothing is read or hashed), never as file names of its own: braces in a
# name would be wildcards, and a name that is not UTF-8 would crash it. The main process rewrites the listing only
# when it changed, so its time tells Snakemake to ingest again.
INPUT_FILES, _notes = qualcode.preflight.before_reading(
    CFG, CODEBOOK, gold_too=workflow.is_main_process and CODEBOOK is not None
)
INPUT_LISTING = f"{RESULTS}/work/inputs.json"
if workflow.is_main_process:
    for _note in _notes:
        logger.warning(_note)
    _protected = qualcode.outputs.provenance.keep_out_of_git(CFG.ingest.input_dir)
    if _protected:
        logger.warning(_protected)
    qualcode.inputs.ingest.write_listing(
        INPUT_LISTING, Path(CFG.ingest.input_dir), INPUT_FILES
    )

# Jobs go to a cluster: this is a job a cluster executor submitted (it must build the same rules as the process that
# submitted it), or the main process with a cluster executor. Snakemake names the executor only after it has read
# this file, but only a cluster run has --jobs (`jobs:` in the SLURM profile): on one machine Snakemake turns --jobs
# into --cores. final_outputs checks the guess once the executor is known. On one machine (a laptop, or one
# allocation) everything runs in place.
ON_CLUSTER = workflow.remote_exec or workflow.resource_settings.nodes is not None
# Coding jobs on compute nodes never open the cache or the limits ledger (SQLite, unsafe across hosts): local rules
# on the submit host hand them the cached answers and absorb their journals. Else coding jobs are local rules.
CODING_ON_COMPUTE = CFG.coding_on_compute(ON_CLUSTER)
# A placeholder left in the profile would fail every job at sbatch, and Snakemake would delete the failed rule's
# earlier outputs: stop before any job, naming what to edit.
_resources = repr(
    (
        workflow.resource_settings.default_resources,
        workflow.resource_settings.overwrite_resources,
    )
)
if ON_CLUSTER and "EDIT-ME" in _resources:
    raise qualcode.config.ConfigError(
        "the profile still holds an EDIT-ME placeholder (slurm_partition or slurm_account): put your cluster's "
        "partition (`sinfo -s` lists them), and account if it needs one, in workflow/profiles/slurm/config.yaml"
    )


def journal_of(wildcards):
    # not an output: Snakemake deletes a failed job's outputs, and the journal must outlive a failure
    return f"{RESULTS}/work/journal/{wildcards.shard}.jsonl"


SHARD_PARAMS = dict(
    # without credentials or where the key lives: the coding job takes those from the config (config.connectable)
    llm=qualcode.config.job_llm(CFG.llm),
    # the chunks are `ancient`: a change of what the prompt shows must rerun the shards through this param
    prompt_context=CFG.prompt_context.model_dump(mode="json"),
    journal=journal_of,
    price=(
        CFG.prices[CFG.llm.model].model_dump() if CFG.llm.model in CFG.prices else None
    ),
)
# A Path, not a str: Snakemake does not compare such a parameter between runs, so moving the cache reruns no job.
CACHE_DIR = Path(CFG.cache_dir)


def execution(wildcards):
    """Where the jobs ran, for the manifest; the executor is known once the jobs are planned, not at parse time."""
    plugin = workflow.executor_plugin
    name = plugin.name if plugin is not None else "local"
    if name in ("dryrun", "touch"):
        # a dry run must plan the value the real run records, or `-n` reports the manifest as changed after every
        # run; the only cluster executor the workflow ships a profile for is SLURM's
        name = "slurm" if ON_CLUSTER else "local"
    return {
        "executor": name,
        "coding": "compute" if CODING_ON_COMPUTE else "submit_host",
    }


wildcard_constraints:
    shard=r"[0-9a-f]{12}",
    variant=r"[a-z0-9_]+\.r[0-9]+|r[0-9]+",
    arm=r"[a-z][a-z0-9_]*",


# validation.replicates and validation.arms: each further coding of the chunks, by name: (arm or None, replicate)
VARIANTS = qualcode.config.variants(CFG)


# The human codings compared: the files of validation.gold and, with review.corrections, the reviewer's decisions
# as the coder `consensus` (written from the review by rule consensus, with 0 requests).
CONSENSUS_GOLD = (
    [f"{RESULTS}/review/consensus.parquet"] if CFG.review.corrections else []
)
VALIDATION_GOLD = [*CFG.validation.gold, *CONSENSUS_GOLD]


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


def bill_config(wildcards):
    """The config as a coding (`run`, the run's own, or a variant) builds its requests: an arm's llm and prompts."""
    arm = None if wildcards.coding == "run" else VARIANTS[wildcards.coding][0]
    return qualcode.config.arm_config(CFG, arm) if arm is not None else CFG


def bill_settings(wildcards):
    """What a coding's requests are built from, and the limit: the bill's only settings, so nothing else reruns it.
    The llm as the coding jobs get it (`job_llm`): no credentials, no key's whereabouts, and the same cache keys.
    """
    cfg = bill_config(wildcards)
    settings = cfg.model_dump(
        mode="json", include={"codebook", "prompts", "prompt_context", "prices"}
    )
    limit = {"confirm_new_requests": cfg.limits.confirm_new_requests}
    return {**settings, "llm": qualcode.config.job_llm(cfg.llm), "limits": limit}


def variant_shards(wildcards):
    return expand(
        f"{RESULTS}/work/variants/{{variant}}/{{shard}}.parquet",
        variant=list(VARIANTS),
        shard=shard_ids(),
    )


def variant_codings(wildcards):
    """Each further coding (replicates and arms) by name: what it asked with and its outputs in the shards' order,
    so the replay archive rebuilds its requests, which differ from the run's own by the replicate number and by
    an arm's llm and prompt templates."""
    return {
        name: {
            "llm": qualcode.config.arm_llm(CFG, arm).model_dump(mode="json"),
            "prompts": qualcode.config.arm_prompts(CFG, arm),
            "replicate": replicate,
            "shards": expand(
                f"{RESULTS}/work/variants/{name}/{{shard}}.parquet", shard=shard_ids()
            ),
        }
        for name, (arm, replicate) in VARIANTS.items()
    }


# The themes stage: provider embeddings (or None: offline vectors), and whether the model names the themes.
EMBEDDINGS = CFG.themes.embeddings
NAMES = CFG.themes.names


def theme_vector_files(wildcards):
    """Each shard's passage vectors for the themes, in the shards' order."""
    return expand(f"{RESULTS}/work/themes/vectors/{{shard}}.parquet", shard=shard_ids())


def final_outputs(wildcards):
    plugin = workflow.executor_plugin
    mismatch = plugin is not None and ON_CLUSTER == workflow.local_exec
    if mismatch and workflow.is_main_process and not workflow.dryrun:
        raise qualcode.config.ConfigError(
            f"executor {plugin.name} with{'' if ON_CLUSTER else 'out'} --jobs: on one machine give --cores only; "
            "with a cluster executor give --jobs (the SLURM profile does)"
        )
    absorbed = [f"{RESULTS}/work/journal/absorbed.json"] if CODING_ON_COMPUTE else []
    return (
        [f"{RESULTS}/{name}.parquet" for name in (*TABLES, *VALIDATION_TABLES)]
        + absorbed
        + [
            f"{RESULTS}/prevalence.parquet",
            f"{RESULTS}/codings.csv",
            f"{RESULTS}/excerpts.csv",
            f"{RESULTS}/codebook/answer.schema.json",
            f"{RESULTS}/replay/answers.jsonl.gz",
            f"{RESULTS}/manifest.json",
            f"{RESULTS}/methods.md",
            *rules.report_plots.output,
            *expand(
                f"{RESULTS}/arms/{{arm}}/{{name}}.parquet",
                arm=list(CFG.validation.arms),
                name=TABLES,
            ),
            *rules.qdpx_export.output,
            *(
                [*rules.themes.output, *rules.theme_plots.output]
                if CFG.themes.enabled
                else []
            ),
            *rules.review_page.output,
            *(rules.apply_corrections.output if CFG.review.corrections else []),
            *rules.disagreements.output,
            *(
                rules.qdpx_sources.output
                if VALIDATION_GOLD or CFG.validation.arms
                else []
            ),
            *rules.agreement_history.output,
        ]
    )
