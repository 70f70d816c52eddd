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
