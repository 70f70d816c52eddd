"""Code one shard of chunks: from the cache where possible, else by the model; every chunk gets a row.

With `cache_dir` (the job runs on the submit host, or on one machine) it opens the cache itself. Without (a compute
node) it must not open it: it codes from the answers the submit host handed it, and keeps new ones in its journal.
"""

from qualcode import config, ids, logs, shards
from qualcode.coding import cache, coder, prompts
from qualcode.inputs import codebook
from qualcode.outputs import provenance, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    started = ids.utc_now()
    # credentials are never params (Snakemake keeps params in its metadata): they come from the run's config
    llm = config.connectable(params.llm, snakemake.config)  # noqa: F821
    cb = codebook.load(inp.codebook)
    label = params.prompt_context["label_continued_turn"]
    templates = prompts.load(inp.system, inp.user, cb, llm.structured_output, label)
    shard = shards.find(inp.plan, snakemake.wildcards.shard)  # noqa: F821
    chunks = tables.read_chunks(inp.chunks, shard.rows)
    price = config.Price(**params.price) if params.price else None
    replicate = params.get("replicate", 1)  # code_variant's; the run's own coding is the first
    if params.cache_dir is None:
        cache.forbid("this coding job runs on a compute node (cluster.coding: compute)")
        results = coder.code_handed(chunks, llm, templates, inp.handed, params.journal, price)
    else:
        with cache.AnswerCache(params.cache_dir) as answers:
            limits = config.LimitsConfig.model_validate(params.limits)
            results = coder.code_chunks(chunks, llm, templates, answers, limits, price, params.journal, replicate)
    meta = {"qualcode.job_started_at": started, "qualcode.job_finished_at": ids.utc_now(), **provenance.job_place()}
    tables.write(tables.results_table(results), snakemake.output.results, metadata=meta)  # noqa: F821
    log.info("done: %s", coder.progress(results, len(chunks), price))
