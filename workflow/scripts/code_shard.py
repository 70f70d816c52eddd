"""Code one shard of chunks: from the cache where possible, else by the model; every chunk gets a row."""

from qualcode import cache, codebook, coding, config, ids, logs, prompts, shards, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    started = ids.utc_now()
    llm = config.LLMConfig.model_validate(params.llm)
    cb = codebook.load(inp.codebook)
    templates = prompts.load(inp.system, inp.user, cb, llm.structured_output)
    shard = shards.find(inp.plan, snakemake.wildcards.shard)  # noqa: F821
    chunks = tables.read_chunks(inp.chunks, shard.rows)
    with cache.AnswerCache(params.cache_dir) as answers:
        limits = config.LimitsConfig.model_validate(params.limits)
        price = config.Price(**params.price) if params.price else None
        replicate = params.get("replicate", 1)  # code_variant's; the run's own coding is the first
        results = coding.code_chunks(chunks, llm, templates, answers, limits, price, params.journal, replicate)
    times = {"qualcode.job_started_at": started, "qualcode.job_finished_at": ids.utc_now()}
    tables.write(tables.results_table(results), snakemake.output.results, metadata=times)  # noqa: F821
    log.info("done: %s", coding.progress(results, len(chunks), price))
