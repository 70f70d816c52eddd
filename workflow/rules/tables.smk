rule tables:
    input:
        chunks=f"{RESULTS}/chunks.parquet",
        shards=coded_shards,
        ingest_failures=f"{RESULTS}/work/ingest_failures.parquet",
        codebook=CFG.codebook,
    output:
        codings=f"{RESULTS}/codings.parquet",
        codes=f"{RESULTS}/codes.parquet",
        llm_calls=f"{RESULTS}/llm_calls.parquet",
        failures=f"{RESULTS}/failures.parquet",
    log:
        f"{RESULTS}/logs/tables/tables.log",
    benchmark:
        f"{RESULTS}/benchmarks/tables/tables.tsv"
    script:
        "../scripts/tables.py"
