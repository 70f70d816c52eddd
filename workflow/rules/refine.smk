# `snakemake refine` (not part of a run): for the codes with the lowest agreement, the model proposes revised
# definitions from their disagreements. Written beside the results, never applied to the codebook in use.


rule refine:
    input:
        agreement=f"{RESULTS}/agreement.parquet",
        disagreements=f"{RESULTS}/disagreements.parquet",
        documents=f"{RESULTS}/documents.parquet",
        codebook=CFG.codebook,
    output:
        codebook=f"{RESULTS}/refine/codebook.proposed.yaml",
        changes=f"{RESULTS}/refine/changes.md",
        archive=f"{RESULTS}/refine/answers.jsonl.gz",
    log:
        f"{RESULTS}/logs/refine/refine.log",
    benchmark:
        f"{RESULTS}/benchmarks/refine/refine.tsv"
    params:
        llm=SHARD_PARAMS["llm"],
        price=SHARD_PARAMS["price"],
        limits=CFG.limits.model_dump(mode="json"),
        refine=CFG.refine.model_dump(mode="json"),
        cache_dir=CACHE_DIR,
        # not an output: Snakemake deletes a failed job's outputs, and the journal must outlive a failure
        journal=f"{RESULTS}/refine/journal/refine.jsonl",
    script:
        "../scripts/refine.py"
