# From texts to a codebook: `snakemake --cores 4 propose`. Not part of the default run: a proposal is a draft for the
# researcher to edit, never applied by itself. One job: open coding of the sampled chunks, consolidation, one naming
# request per group, through the shared asker and the answer cache, so a rerun sends nothing and new documents send
# only their chunks (and the naming of the groups they changed).

INDUCTION = f"{RESULTS}/induction"


localrules:
    propose,


rule propose_codebook:
    input:
        chunks=f"{RESULTS}/work/chunks.parquet",
        documents=f"{RESULTS}/work/documents.parquet",
        system=CFG.induction.prompts["system"],
        user=CFG.induction.prompts["user"],
        name=CFG.induction.prompts["name"],
        extended=CFG.induction.extend or [],
    output:
        codebook=f"{INDUCTION}/codebook.yaml",
        candidates=f"{INDUCTION}/candidates.parquet",
        csv=f"{INDUCTION}/proposed_codes.csv",
        saturation=f"{INDUCTION}/saturation.parquet",
        figure=f"{INDUCTION}/saturation.png",
        page=f"{INDUCTION}/proposed_codes.html",
        qdc=f"{INDUCTION}/codebook.qdc",
        methods=f"{INDUCTION}/methods.md",
        archive=f"{INDUCTION}/replay/answers.jsonl.gz",
    log:
        f"{RESULTS}/logs/propose_codebook/propose_codebook.log",
    benchmark:
        f"{RESULTS}/benchmarks/propose_codebook/propose_codebook.tsv"
    threads: CFG.llm.n_threads if CFG.llm.provider == "local" else 1
    resources:
        llm_requests=1 if CFG.llm.provider == "local" else CFG.llm.concurrency,
    params:
        induction=CFG.induction.model_dump(mode="json"),
        llm=qualcode.config.job_llm(CFG.llm),
        cache_dir=CACHE_DIR,
        # not an output: the journal must outlive a failed job
        journal=f"{RESULTS}/work/journal/induction/propose.jsonl",
        limits=CFG.limits.model_dump(exclude={"confirm_new_requests"}),
        price=(
            CFG.prices[CFG.llm.model].model_dump()
            if CFG.llm.model in CFG.prices
            else None
        ),
        version=ORIGIN["qualcode.version"],
    script:
        "../scripts/propose_codebook.py"


rule propose:
    input:
        rules.propose_codebook.output,
