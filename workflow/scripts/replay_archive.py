"""Export every coded chunk's request and answer, from the coding jobs' outputs: the archive that rebuilds the
tables."""

from qualcode import archive, codebook, coding, config, logs, prompts, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    llm = config.LLMConfig.model_validate(params.llm)
    templates = prompts.load(inp.system, inp.user, codebook.load(inp.codebook), llm.structured_output)
    results = tables.read_results(inp.shards)
    pairs = archive.from_results(results, tables.read_chunks(inp.chunks), coding.Requests(llm, templates))
    n = archive.export(pairs, snakemake.output.archive)  # noqa: F821
    log.info(
        "archived %d answers of %d coded chunks; %d failed chunks have none", n, len(pairs), len(results) - len(pairs)
    )
