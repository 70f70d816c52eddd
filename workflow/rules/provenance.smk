# What a methods section needs: the manifest, a methods paragraph, and the replay archive.


# Every answer a table is built from: the run's own coding, its replicates and its arms.
rule replay_archive:
    input:
        chunks=f"{RESULTS}/work/chunks.parquet",
        plan=f"{RESULTS}/work/shards.json",
        shards=coded_shards,
        variants=variant_shards,
        codebook=CFG.codebook,
        system=CFG.prompts["system"],
        user=CFG.prompts["user"],
        variant_templates=sorted(
            {
                path
                for arm, _ in VARIANTS.values()
                for path in qualcode.config.arm_prompts(CFG, arm).values()
            }
        ),
        # provider embeddings of the themes stage (themes.embeddings): their answers are in the archive too
        theme_vectors=(
            theme_vector_files if CFG.themes.enabled and CFG.themes.embeddings else []
        ),
        # and the themes' names (themes.names)
        theme_names=(
            f"{RESULTS}/work/themes/named.jsonl"
            if CFG.themes.enabled and CFG.themes.names
            else []
        ),
    output:
        archive=f"{RESULTS}/replay/answers.jsonl.gz",
    log:
        f"{RESULTS}/logs/replay_archive/replay_archive.log",
    params:
        llm=qualcode.config.job_llm(CFG.llm),
        prompt_context=CFG.prompt_context.model_dump(mode="json"),
        variants=variant_codings,
        embeddings=CFG.themes.embeddings if CFG.themes.enabled else None,
    script:
        "../scripts/replay_archive.py"


# The manifest and the methods paragraph written from it (and its page in the report): one job, as the paragraph
# needs nothing the manifest job has not read (a job costs a Python start and its imports, about a second of CPU, at
# the end of every run), and the report's figures need not wait for it.
rule manifest:
    input:
        **{
            name: f"{RESULTS}/{name}.parquet"
            for name in (*TABLES, *VALIDATION_TABLES, "prevalence")
        },
        **{
            name: f"{RESULTS}/{name}.parquet"
            for name in (THEME_TABLES if CFG.themes.enabled else ())
        },
        answer_schema=f"{RESULTS}/codebook/answer.schema.json",
        archive=f"{RESULTS}/replay/answers.jsonl.gz",
        history=f"{RESULTS}/agreement_history.parquet",
        shards=coded_shards,
        documents_in=INPUT_LISTING,
        codebook=CFG.codebook,
        system=CFG.prompts["system"],
        user=CFG.prompts["user"],
        # the themes' methods sentence joins the methods paragraph, and their tables the hashes (themes.enabled)
        themes_methods=(f"{RESULTS}/themes/methods.md" if CFG.themes.enabled else []),
    output:
        manifest=f"{RESULTS}/manifest.json",
        methods=f"{RESULTS}/methods.md",
        methods_page=report(
            f"{RESULTS}/report/methods.html",
            caption="../report/methods.rst",
            category="Methods",
        ),
    log:
        f"{RESULTS}/logs/manifest/manifest.log",
    params:
        config=CFG.model_dump(mode="json"),
        config_files=CONFIG_FILES,
        workflow_dir=workflow.basedir,
        execution=execution,
        validation=CFG.validation.model_dump(mode="json"),
    script:
        "../scripts/manifest.py"
