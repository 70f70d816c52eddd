"""Export every request of the run and its cached answer: the archive that rebuilds the tables."""

from qualcode import archive, cache, codebook, coding, config, logs, prompts, tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    llm = config.LLMConfig.model_validate(params.llm)
    templates = prompts.load(inp.system, inp.user, codebook.load(inp.codebook), llm.structured_output)
    with cache.AnswerCache(params.cache_dir) as answers:
        coder = coding.Coder(llm, templates, answers)
        requests = [coder.request(c) for c in tables.read_chunks(inp.chunks)]
        n, missing = archive.export(requests, answers, snakemake.output.archive)  # noqa: F821
    log.info("archived %d answers; %d chunks had none (failures are not archived)", n, missing)
