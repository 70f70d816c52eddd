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


# Prevalence of each code over the corpus: the model's, and corrected with the human-coded probability sample
# (validation.sample) with 95% intervals, overall and by validation.by. Always written: without a probability sample
# the corrected columns are empty and `refused` says why.
rule prevalence:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codings=f"{RESULTS}/codings.parquet",
        codes=f"{RESULTS}/codes.parquet",
        gold=CFG.validation.gold,
        sample=[CFG.validation.sample] if CFG.validation.sample else [],
        codebook=CFG.codebook,
    output:
        prevalence=f"{RESULTS}/prevalence.parquet",
    log:
        f"{RESULTS}/logs/prevalence/prevalence.log",
    benchmark:
        f"{RESULTS}/benchmarks/prevalence/prevalence.tsv"
    params:
        validation=CFG.validation.model_dump(
            mode="json", include={"unit", "reference", "on_error", "sample", "by"}
        ),
        origin=ORIGIN,
        pilot=CFG.pilot.documents is not None,
    script:
        "../scripts/prevalence.py"
