# The codes for QDA programs: a REFI-QDA project (NVivo, ATLAS.ti, MAXQDA, QualCoder) and its codebook alone.


rule qdpx_export:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codes=f"{RESULTS}/codes.parquet",
        codebook=CFG.codebook,
    output:
        qdpx=f"{RESULTS}/project.qdpx",
        qdc=f"{RESULTS}/codebook.qdc",
    log:
        f"{RESULTS}/logs/qdpx_export/qdpx_export.log",
    benchmark:
        f"{RESULTS}/benchmarks/qdpx_export/qdpx_export.tsv"
    params:
        model=CFG.llm.model,
        version=ORIGIN["qualcode.version"],
        ungrounded=CFG.exchange.ungrounded,
    script:
        "../scripts/qdpx_export.py"


# Every source as its own user (the model, each arm, each human coder, the consensus): a REFI-QDA project for
# comparing them side by side in a QDA program. Only with human codings or arms to compare.
rule qdpx_sources:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codes=f"{RESULTS}/codes.parquet",
        arms=expand(
            f"{RESULTS}/arms/{{arm}}/codes.parquet", arm=list(CFG.validation.arms)
        ),
        gold=VALIDATION_GOLD,
        codebook=CFG.codebook,
    output:
        qdpx=f"{RESULTS}/sources.qdpx",
    log:
        f"{RESULTS}/logs/qdpx_sources/qdpx_sources.log",
    benchmark:
        f"{RESULTS}/benchmarks/qdpx_sources/qdpx_sources.tsv"
    params:
        arms=list(CFG.validation.arms),
        validation=CFG.validation.model_dump(mode="json"),
        model=CFG.llm.model,
        version=ORIGIN["qualcode.version"],
        sample=CFG.pilot.documents is not None,
    script:
        "../scripts/qdpx_sources.py"
