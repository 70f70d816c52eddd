rule ingest:
    input:
        listing=INPUT_LISTING,
    output:
        documents=f"{RESULTS}/work/documents.parquet",
        problems=f"{RESULTS}/work/ingest_failures.parquet",
    log:
        f"{RESULTS}/logs/ingest/ingest.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/ingest.tsv"
    params:
        ingest=CFG.ingest.model_dump(mode="json"),
        pilot=CFG.pilot.model_dump(mode="json"),
    script:
        "../scripts/ingest.py"
