checkpoint chunk:
    input:
        documents=f"{RESULTS}/work/documents.parquet",
    output:
        chunks=f"{RESULTS}/work/chunks.parquet",
        # update: kept, not deleted, when the checkpoint runs again, so the new plan keeps its number of shards
        shards=update(f"{RESULTS}/work/shards.json"),
    log:
        f"{RESULTS}/logs/chunk/chunk.log",
    benchmark:
        f"{RESULTS}/benchmarks/chunk/chunk.tsv"
    params:
        chunking=CFG.chunking.model_dump(mode="json"),
        shard_size=CFG.coding.shard_size,
        context_keys=CFG.prompt_context.metadata,
    script:
        "../scripts/chunk.py"
