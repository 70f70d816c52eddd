# The validation sample (`snakemake --cores 4 gold_sample`, not part of `all`): which units humans should code, drawn
# at random (stratified if asked), with each unit's inclusion probability; a blind coding sheet and a REFI-QDA
# project of those units, without the model's codes. Only stratifying by the model's codes needs the coding run.


rule gold_sample:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codes=([f"{RESULTS}/codes.parquet"] if CFG.validation.draw.by_codes else []),
        codebook=CFG.codebook,
    output:
        sample=f"{RESULTS}/gold_sample/sample.csv",
        sheet=f"{RESULTS}/gold_sample/sheet.csv",
        qdpx=f"{RESULTS}/gold_sample/sample.qdpx",
        design=f"{RESULTS}/gold_sample/design.json",
    log:
        f"{RESULTS}/logs/gold_sample/gold_sample.log",
    benchmark:
        f"{RESULTS}/benchmarks/gold_sample/gold_sample.tsv"
    params:
        settings=CFG.validation.model_dump(
            mode="json", include={"unit", "draw", "holdout", "holdout_seed"}
        ),
        version=ORIGIN["qualcode.version"],
    script:
        "../scripts/gold_sample.py"
