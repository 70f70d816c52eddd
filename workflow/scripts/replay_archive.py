"""Export every coded chunk's request and answer, from the coding jobs' outputs (one shard at a time): the archive
that rebuilds the tables."""

from qualcode import archive, codebook, coding, config, logs, prompts, shards, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    llm = config.LLMConfig.model_validate(params.llm)
    label = params.prompt_context["label_continued_turn"]
    templates = prompts.load(inp.system, inp.user, codebook.load(inp.codebook), llm.structured_output, label)
    requests = coding.Requests(llm, templates)
    coded = tables.iter_shards(inp.chunks, shards.read(inp.plan), inp.shards)
    pairs = (pair for chunks, results in coded for pair in archive.from_results(results, chunks, requests))
    n = archive.export(pairs, snakemake.output.archive)  # noqa: F821
    log.info("archived %d answers (failed chunks have none)", n)
