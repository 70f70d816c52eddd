# From codes to themes (themes.enabled): every coded chunk as a vector, stored by shard, then one seeded clustering
# of them all into the theme tables. A shard's vectors are made once: its name is a hash of its chunks, so a rerun or
# a corpus with documents added embeds only the new shards, and provider embeddings come from the answer cache for
# any text embedded before.

if ON_CLUSTER and EMBEDDINGS:

    # provider embeddings open the answer cache (SQLite): they stay on the submit host, where it is
    localrules:
        theme_vectors,


if ON_CLUSTER and NAMES:

    # the names are asked through the answer cache too
    localrules:
        themes,


rule theme_vectors:
    input:
        chunks=ancient(f"{RESULTS}/work/chunks.parquet"),
        plan=ancient(f"{RESULTS}/work/shards.json"),
        results=f"{RESULTS}/work/shards/{{shard}}.parquet",
    output:
        vectors=f"{RESULTS}/work/themes/vectors/{{shard}}.parquet",
    log:
        f"{RESULTS}/logs/theme_vectors/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/theme_vectors/{{shard}}.tsv"
    resources:
        llm_requests=1 if EMBEDDINGS else 0,
    params:
        themes=CFG.themes.model_dump(mode="json", include={"enabled", "embeddings"}),
        llm=qualcode.config.job_llm(CFG.llm) if EMBEDDINGS else None,
        cache_dir=CACHE_DIR if EMBEDDINGS else None,
        limits=CFG.limits.model_dump(exclude={"confirm_new_requests"}),
        price=(
            CFG.prices[EMBEDDINGS].model_dump()
            if EMBEDDINGS and EMBEDDINGS in CFG.prices
            else None
        ),
    script:
        "../scripts/theme_vectors.py"


rule themes:
    input:
        vectors=theme_vector_files,
        excerpts=f"{RESULTS}/excerpts.parquet",
    output:
        **{name: f"{RESULTS}/{name}.parquet" for name in THEME_TABLES},
        excerpts_csv=f"{RESULTS}/themes_excerpts.csv",
        methods=f"{RESULTS}/themes/methods.md",
        # the naming questions and their answers, for the replay archive
        asked=f"{RESULTS}/work/themes/named.jsonl",
    log:
        f"{RESULTS}/logs/themes/themes.log",
    benchmark:
        f"{RESULTS}/benchmarks/themes/themes.tsv"
    threads: CFG.llm.n_threads if NAMES and CFG.llm.provider == "local" else 1
    resources:
        llm_requests=(
            0
            if not NAMES
            else 1 if CFG.llm.provider == "local" else CFG.llm.concurrency
        ),
    params:
        themes=CFG.themes.model_dump(mode="json"),
        origin=ORIGIN,
        llm=qualcode.config.job_llm(CFG.llm) if NAMES else None,
        cache_dir=CACHE_DIR if NAMES else None,
        limits=CFG.limits.model_dump(exclude={"confirm_new_requests"}),
        price=SHARD_PARAMS["price"],
        journal=f"{RESULTS}/work/themes/journal/themes.jsonl",
    script:
        "../scripts/themes.py"


# The themes in the report: the map, the heat map and a page per theme; each bounded in size at any corpus size.
rule theme_plots:
    input:
        themes=f"{RESULTS}/themes.parquet",
        chunk_themes=f"{RESULTS}/chunk_themes.parquet",
        theme_codes=f"{RESULTS}/theme_codes.parquet",
        excerpts=f"{RESULTS}/excerpts.parquet",
        methods=f"{RESULTS}/themes/methods.md",
    output:
        map=report(
            f"{RESULTS}/report/themes_map.png",
            caption="../report/themes_map.rst",
            category="Themes",
        ),
        codes=report(
            f"{RESULTS}/report/themes_by_codes.png",
            caption="../report/themes_by_codes.rst",
            category="Themes",
        ),
        page=report(
            f"{RESULTS}/report/themes.html",
            caption="../report/themes.rst",
            category="Themes",
        ),
    log:
        f"{RESULTS}/logs/theme_plots/theme_plots.log",
    benchmark:
        f"{RESULTS}/benchmarks/theme_plots/theme_plots.tsv"
    params:
        seed=CFG.themes.seed,
    script:
        "../scripts/theme_plots.py"
