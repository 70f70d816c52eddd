# Human review: a page showing every quote in its text, a spreadsheet for decisions, and the decisions applied.


rule review_page:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codings=f"{RESULTS}/codings.parquet",
        codes=f"{RESULTS}/codes.parquet",
        failures=f"{RESULTS}/failures.parquet",
        codebook=CFG.codebook,
    output:
        page=f"{RESULTS}/review/index.html",
        csv=f"{RESULTS}/review/review.csv",
    log:
        f"{RESULTS}/logs/review_page/review_page.log",
    benchmark:
        f"{RESULTS}/benchmarks/review_page/review_page.tsv"
    params:
        model=CFG.llm.model,
    script:
        "../scripts/review_page.py"
