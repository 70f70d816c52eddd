# Agreement with human coders (validation.gold) and stability across replicates (validation.replicates), for the
# run's model and each arm (validation.arms). The three tables are always written, empty when there is nothing to
# compare, so the workflow's outputs do not depend on the settings.


rule validate:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        shards=coded_shards,
        variants=variant_shards,
        gold=CFG.validation.gold,
        codebook=CFG.codebook,
    output:
        **{name: f"{RESULTS}/{name}.parquet" for name in VALIDATION_TABLES},
    log:
        f"{RESULTS}/logs/validate/validate.log",
    benchmark:
        f"{RESULTS}/benchmarks/validate/validate.tsv"
    params:
        # not the sample's drawing settings: changing them redraws the sample, not the agreement
        validation=CFG.validation.model_dump(mode="json", exclude={"draw"}),
        variants=VARIANTS,
        origin=ORIGIN,
        sample=CFG.pilot.documents is not None,
    script:
        "../scripts/validate.py"
