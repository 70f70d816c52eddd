"""On the submit host: hand a compute job the cached answers of its shard, so it sends only what is missing and never
opens the cache. Journals left by earlier jobs, killed ones included, are absorbed into the cache first."""

from qualcode import config, logs, shards
from qualcode.coding import cache, coder, prompts
from qualcode.inputs import codebook
from qualcode.outputs import tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    llm = config.LLMConfig.model_validate(params.llm)
    templates = prompts.load(inp.system, inp.user, codebook.load(inp.codebook), llm.structured_output)
    chunks = tables.read_chunks(inp.chunks, shards.find(inp.plan, snakemake.wildcards.shard).rows)  # noqa: F821
    handed_path = snakemake.output.handed  # noqa: F821
    with cache.AnswerCache(params.cache_dir) as answers:
        handed, missing = coder.hand_over_shard(chunks, llm, templates, answers, handed_path, params.journal)
    log.info("%d chunk(s): %d answer(s) handed over from the cache, %d to send", len(chunks), handed, missing)
