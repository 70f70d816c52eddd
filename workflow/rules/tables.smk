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


# Each arm's own coding tables (its first replicate), in results/arms/<arm>/, stamped with the arm's settings.
rule arm_tables:
    input:
        documents=f"{RESULTS}/work/documents.parquet",
        chunks=f"{RESULTS}/work/chunks.parquet",
        shards=lambda wildcards: expand(
            f"{RESULTS}/work/variants/{wildcards.arm}.r1/{{shard}}.parquet",
            shard=shard_ids(),
        ),
        ingest_failures=f"{RESULTS}/work/ingest_failures.parquet",
        codebook=CFG.codebook,
    output:
        **{name: f"{RESULTS}/arms/{{arm}}/{name}.parquet" for name in TABLES},
        codings_csv=f"{RESULTS}/arms/{{arm}}/codings.csv",
        excerpts_csv=f"{RESULTS}/arms/{{arm}}/excerpts.csv",
    log:
        f"{RESULTS}/logs/arm_tables/{{arm}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/arm_tables/{{arm}}.tsv"
    params:
        origin=lambda wildcards: qualcode.outputs.provenance.origin(
            qualcode.config.arm_config(CFG, wildcards.arm)
        ),
        prices={k: v.model_dump() for k, v in CFG.prices.items()},
    script:
        "../scripts/tables.py"
