# One job per shard of chunks, not per chunk: Snakemake's per-job cost would dwarf the work at
# thousands of chunks. Requests inside a job run concurrently; the llm_requests resource caps the total.
# The chunks and the shard plan are `ancient`: they are rewritten whenever any document changes, but a shard's
# name is a hash of its chunks, so a job whose output exists has nothing new to code (only new names run).
#
# Two shapes (see CODING_ON_COMPUTE in common.smk). In place: the coding job opens the cache itself. On compute
# nodes: a local rule on the submit host hands each job the cached answers of its shard (code_handoff), the job codes
# the rest and keeps them in its journal (one writer per file: safe on a shared file system), and a local rule
# absorbs the journals into the cache (code_absorb). No job on a compute node opens a SQLite database.


# Light, network- or disk-bound work stays on the submit host when jobs go to a cluster.
localrules:
    bill,
    code_handoff,
    code_absorb,
    answer_schema,
    manifest,
    report_plots,
    # light finishing work of the validation and themes stages (the history is kept outside results/, on this host)
    disagreements,
    agreement_history,
    prevalence,
    theme_plots,


if not CODING_ON_COMPUTE and ON_CLUSTER:

    # a remote API: compute nodes often cannot reach it, and the cache stays on the submit host's disk; batches
    # (llm.mode batch, batch_files) too: waiting for one must not hold an allocation
    localrules:
        code_shard,


if ON_CLUSTER:

    # replicates and arms open the cache themselves (they have no hand-over yet): on a cluster they stay on the
    # submit host, where the cache is, whatever the model
    localrules:
        code_variant,


# Before the first request of a run: the requests in the cache and the new ones, why they are new, and what they
# cost; the run stops here when more are new than limits.confirm_new_requests. A checkpoint: the coding jobs are
# planned again once it has run, so the bill (rewritten whenever the chunks, codebook, templates or llm settings
# change) reruns no shard whose output exists. One light job for all shards of a coding (the run's own, `run`, and
# each of VARIANTS); local, as it opens the cache.
checkpoint bill:
    input:
        chunks=f"{RESULTS}/work/chunks.parquet",
        codebook=CFG.codebook,
        system=lambda wildcards: bill_config(wildcards).prompts["system"],
        user=lambda wildcards: bill_config(wildcards).prompts["user"],
    output:
        bill=f"{RESULTS}/work/bill/{{coding}}.json",
    log:
        f"{RESULTS}/logs/bill/{{coding}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/bill/{{coding}}.tsv"
    wildcard_constraints:
        coding=r"run|[a-z0-9_]+\.r[0-9]+|r[0-9]+",
    params:
        settings=bill_settings,
        replicate=lambda wildcards: (
            1 if wildcards.coding == "run" else VARIANTS[wildcards.coding][1]
        ),
        cache_dir=CACHE_DIR,
        # what the next bill compares with; not an output, so a run the bill stops keeps the last approved one
        record=lambda wildcards: f"{RESULTS}/work/requests/{wildcards.coding}.json",
        # the coding outputs this bill is for: those made with other settings are removed (estimate.forget_codings)
        codings=lambda wildcards: (
            f"{RESULTS}/work/shards"
            if wildcards.coding == "run"
            else f"{RESULTS}/work/variants/{wildcards.coding}"
        ),
    script:
        "../scripts/bill.py"


# Used only when coding runs on compute nodes.
rule code_handoff:
    input:
        chunks=ancient(f"{RESULTS}/work/chunks.parquet"),
        plan=ancient(f"{RESULTS}/work/shards.json"),
        codebook=CFG.codebook,
        system=CFG.prompts["system"],
        user=CFG.prompts["user"],
    output:
        handed=temp(f"{RESULTS}/work/handed/{{shard}}.jsonl"),
    log:
        f"{RESULTS}/logs/code_handoff/{{shard}}.log",
    params:
        **SHARD_PARAMS,
        cache_dir=CACHE_DIR,
    script:
        "../scripts/code_handoff.py"


rule code_absorb:
    input:
        shards=coded_shards,
    output:
        absorbed=f"{RESULTS}/work/journal/absorbed.json",
    log:
        f"{RESULTS}/logs/code_absorb/code_absorb.log",
    params:
        journals=lambda w, output: str(Path(output.absorbed).parent),
        cache_dir=CACHE_DIR,
    script:
        "../scripts/code_absorb.py"


rule code_shard:
    input:
        chunks=ancient(f"{RESULTS}/work/chunks.parquet"),
        plan=ancient(f"{RESULTS}/work/shards.json"),
        codebook=CFG.codebook,
        system=CFG.prompts["system"],
        user=CFG.prompts["user"],
        handed=(f"{RESULTS}/work/handed/{{shard}}.jsonl" if CODING_ON_COMPUTE else []),
        bill=lambda wildcards: ancient(checkpoints.bill.get(coding="run").output.bill),
    output:
        results=f"{RESULTS}/work/shards/{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/code_shard/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/code_shard/{{shard}}.tsv"
    # on compute nodes, shards go to SLURM a few to a job (group-components in the SLURM profile); a job in a group
    # is never a local rule, so coding on the submit host has none
    group:
        "code" if CODING_ON_COMPUTE else None
    threads: CFG.llm.n_threads if CFG.llm.provider == "local" else 1
    resources:
        llm_requests=1 if CFG.llm.provider == "local" else CFG.llm.concurrency,
    params:
        **SHARD_PARAMS,
        cache_dir=None if CODING_ON_COMPUTE else CACHE_DIR,
        # the bill keeps confirm_new_requests: going on past it must not rerun the shards
        limits=CFG.limits.model_dump(exclude={"confirm_new_requests"}),
    script:
        "../scripts/code_shard.py"


# validation.replicates and validation.arms: the same chunks and shards coded again, each variant with its own
# settings (an arm's llm and prompts) and replicate number, through the same cache: only requests never answered
# before are sent, so adding an arm sends only its requests.
rule code_variant:
    input:
        chunks=ancient(f"{RESULTS}/work/chunks.parquet"),
        plan=ancient(f"{RESULTS}/work/shards.json"),
        codebook=CFG.codebook,
        system=lambda wildcards: variant_prompts(wildcards)["system"],
        user=lambda wildcards: variant_prompts(wildcards)["user"],
        bill=lambda wildcards: ancient(
            checkpoints.bill.get(coding=wildcards.variant).output.bill
        ),
    output:
        results=f"{RESULTS}/work/variants/{{variant}}/{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/code_variant/{{variant}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/code_variant/{{variant}}/{{shard}}.tsv"
    threads: CFG.llm.n_threads if CFG.llm.provider == "local" else 1
    resources:
        llm_requests=1 if CFG.llm.provider == "local" else CFG.llm.concurrency,
    params:
        llm=lambda wildcards: qualcode.config.job_llm(variant_llm(wildcards)),
        replicate=lambda wildcards: VARIANTS[wildcards.variant][1],
        prompt_context=SHARD_PARAMS["prompt_context"],
        cache_dir=CACHE_DIR,
        journal=lambda wildcards: f"{RESULTS}/work/journal/{wildcards.variant}-{wildcards.shard}.jsonl",
        limits=CFG.limits.model_dump(exclude={"confirm_new_requests"}),
        price=lambda wildcards: (
            CFG.prices[variant_llm(wildcards).model].model_dump()
            if variant_llm(wildcards).model in CFG.prices
            else None
        ),
    script:
        "../scripts/code_shard.py"
