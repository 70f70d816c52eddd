rule tables:
    input:
        documents=f"{RESULTS}/work/documents.parquet",
        chunks=f"{RESULTS}/work/chunks.parquet",
        shards=coded_shards,
        ingest_failures=f"{RESULTS}/work/ingest_failures.parquet",
        codebook=CFG.codebook,
    output:
        **{name: f"{RESULTS}/{name}.parquet" for name in TABLES},
        codings_csv=f"{RESULTS}/codings.csv",
        excerpts_csv=f"{RESULTS}/excerpts.csv",
    log:
        f"{RESULTS}/logs/tables/tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/tables.tsv"
    params:
        origin=ORIGIN,
        prices={k: v.model_dump() for k, v in CFG.prices.items()},
    script:
        "../scripts/tables.py"
