# One job per shard of chunks, not per chunk: Snakemake's per-job cost would dwarf the work at
# thousands of chunks. Requests inside a job run concurrently; the llm_requests resource caps the total.
# The chunks and the shard plan are `ancient`: they are rewritten whenever any document changes, but a shard's
# name is a hash of its chunks, so a job whose output exists has nothing new to code (only new names run).


rule code_shard:
    input:
        chunks=ancient(f"{RESULTS}/work/chunks.parquet"),
        plan=ancient(f"{RESULTS}/work/shards.json"),
        codebook=CFG.codebook,
        system=CFG.prompts["system"],
        user=CFG.prompts["user"],
    output:
        results=f"{RESULTS}/work/shards/{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/code_shard/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/code_shard/{{shard}}.tsv"
    threads: CFG.llm.n_threads if CFG.llm.provider == "local" else 1
    resources:
        llm_requests=1 if CFG.llm.provider == "local" else CFG.llm.concurrency,
    params:
        llm=CFG.llm.model_dump(mode="json"),
        cache_dir=CFG.cache_dir,
        # not an output: Snakemake deletes a failed job's outputs, and the journal must outlive a failure
        journal=lambda wildcards: f"{RESULTS}/work/journal/{wildcards.shard}.jsonl",
        limits=CFG.limits.model_dump(),
        price=(
            CFG.prices[CFG.llm.model].model_dump()
            if CFG.llm.model in CFG.prices
            else None
        ),
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
        llm=lambda wildcards: variant_llm(wildcards).model_dump(mode="json"),
        replicate=lambda wildcards: VARIANTS[wildcards.variant][1],
        cache_dir=CFG.cache_dir,
        journal=lambda wildcards: f"{RESULTS}/work/journal/{wildcards.variant}-{wildcards.shard}.jsonl",
        limits=CFG.limits.model_dump(),
        price=lambda wildcards: (
            CFG.prices[variant_llm(wildcards).model].model_dump()
            if variant_llm(wildcards).model in CFG.prices
            else None
        ),
    script:
        "../scripts/code_shard.py"
