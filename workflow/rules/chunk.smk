checkpoint chunk:
    input:
        documents=f"{RESULTS}/work/documents.parquet",
    output:
        chunks=f"{RESULTS}/work/chunks.parquet",
    log:
        f"{RESULTS}/logs/chunk/chunk.log",
    benchmark:
        f"{RESULTS}/benchmarks/chunk/chunk.tsv"
    params:
        chunking=CFG.chunking.model_dump(mode="json"),
    script:
        "../scripts/chunk.py"
