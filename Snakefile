# qualcode: LLM-assisted qualitative coding, reproducibly.
#
#   data/raw/*  --ingest-->  documents  --chunk-->  chunks  --code (shards)-->  answers  --tables-->  Parquet
#   then themes (the coded passages clustered), the manifest, a methods paragraph and a replay archive, for citing
#   and rebuilding the run.
#
# Settings: config/config.yaml (cite it), the codebook and the prompt templates it names.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/chunk.smk"
include: "workflow/rules/codebook.smk"
include: "workflow/rules/code.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/themes.smk"
include: "workflow/rules/gold_sample.smk"
include: "workflow/rules/provenance.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/exchange.smk"
include: "workflow/rules/review.smk"
include: "workflow/rules/induction.smk"
include: "workflow/rules/refine.smk"


rule all:
    default_target: True
    input:
        final_outputs,
