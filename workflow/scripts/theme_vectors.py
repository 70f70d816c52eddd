"""One shard's passage vectors for the themes stage: the offline term counts, or the provider's embeddings through the
answer cache (only texts never embedded before are sent)."""

from qualcode import config, logs, shards
from qualcode.analysis import themes
from qualcode.coding import cache
from qualcode.outputs import tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    settings = config.ThemesConfig.model_validate(params.themes)
    shard = shards.find(inp.plan, snakemake.wildcards.shard)  # noqa: F821
    chunks = tables.read_chunks(inp.chunks, shard.rows)
    results = tables.read_results([inp.results])
    if settings.embeddings:
        # credentials are never params (Snakemake keeps params in its metadata): they come from the run's config
        llm = config.connectable(params.llm, snakemake.config)  # noqa: F821
        price = config.Price(**params.price) if params.price else None
        limits = config.LimitsConfig.model_validate(params.limits)
        with cache.AnswerCache(params.cache_dir) as answers:
            table = themes.embed_shard(chunks, results, settings, llm, answers, limits, price)
    else:
        table = themes.embed_shard(chunks, results, settings)
    tables.write(table, snakemake.output.vectors)  # noqa: F821
    log.info("vectors of %d coded chunks of %d", table.num_rows, len(chunks))
