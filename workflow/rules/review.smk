# Human review: a page showing every quote in its text, a spreadsheet for decisions, and the decisions applied.


rule review_page:
    input:
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codings=f"{RESULTS}/codings.parquet",
        codes=f"{RESULTS}/codes.parquet",
        failures=f"{RESULTS}/failures.parquet",
        disagreements=f"{RESULTS}/disagreements.parquet",
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


# Only with `review.corrections` set: the decisions applied to the model's codes. Reads the published codes, so it
# never runs a coding job and sends nothing to the model.
rule apply_corrections:
    input:
        corrections=CFG.review.corrections or [],
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codes=f"{RESULTS}/codes.parquet",
        codebook=CFG.codebook,
    output:
        codes_reviewed=f"{RESULTS}/codes_reviewed.parquet",
    log:
        f"{RESULTS}/logs/apply_corrections/apply_corrections.log",
    benchmark:
        f"{RESULTS}/benchmarks/apply_corrections/apply_corrections.tsv"
    params:
        model=CFG.llm.model,
        reviewer=CFG.review.reviewer,
        ungrounded=CFG.exchange.ungrounded,
        origin=ORIGIN,
    script:
        "../scripts/apply_corrections.py"


# Only with `review.corrections` set: the reviewer's decisions as the gold source `consensus`, which the validate
# stage scores the model against beside the human coders. Reads the published codes: sends nothing to the model.
rule consensus:
    input:
        corrections=CFG.review.corrections or [],
        documents=f"{RESULTS}/documents.parquet",
        chunks=f"{RESULTS}/chunks.parquet",
        codes=f"{RESULTS}/codes.parquet",
        codebook=CFG.codebook,
    output:
        consensus=f"{RESULTS}/review/consensus.parquet",
    log:
        f"{RESULTS}/logs/consensus/consensus.log",
    benchmark:
        f"{RESULTS}/benchmarks/consensus/consensus.tsv"
    params:
        model=CFG.llm.model,
        reviewer=CFG.review.reviewer,
        origin=ORIGIN,
    script:
        "../scripts/consensus.py"
