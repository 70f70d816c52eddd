# Agreement with human coders: the model's codes beside the human codings named by validation.gold, on documents or
# chunks. The three tables are always written (empty without human codings), so the outputs do not depend on it.


rule validate:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codes=f"{RESULTS}/codes.parquet",
        codings=f"{RESULTS}/codings.parquet",
        gold=CFG.validation.gold,
        codebook=CFG.codebook,
    output:
        **{name: f"{RESULTS}/{name}.parquet" for name in VALIDATION_TABLES},
    log:
        f"{RESULTS}/logs/validate/validate.log",
    benchmark:
        f"{RESULTS}/benchmarks/validate/validate.tsv"
    params:
        validation=CFG.validation.model_dump(mode="json"),
        origin=ORIGIN,
    script:
        "../scripts/validate.py"
