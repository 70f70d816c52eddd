"""Export every coded chunk's request and answer, from the coding jobs' outputs (one shard at a time): the run's own
coding, its replicates and its arms, each request rebuilt with the settings it was sent with. The archive that
rebuilds every table; with provider embeddings (themes.embeddings), their answers too."""

import itertools

from qualcode import config, logs, shards
from qualcode.analysis import naming, themes
from qualcode.coding import archive, coder, prompts
from qualcode.inputs import codebook
from qualcode.outputs import tables

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params = snakemake.input, snakemake.params  # noqa: F821
    cb = codebook.load(inp.codebook)
    label = params.prompt_context["label_continued_turn"]

    def requests(llm_json, system, user, replicate=1):
        llm = config.LLMConfig.model_validate(llm_json)
        return coder.Requests(llm, prompts.load(system, user, cb, llm.structured_output, label), replicate)

    codings = [(requests(params.llm, inp.system, inp.user), inp.shards)]
    for v in params.variants.values():
        codings.append((requests(v["llm"], v["prompts"]["system"], v["prompts"]["user"], v["replicate"]), v["shards"]))
    plan = shards.read(inp.plan)
    pairs = (
        pair
        for reqs, files in codings
        for chunks, results in tables.iter_shards(inp.chunks, plan, files)
        for pair in archive.from_results(results, chunks, reqs)
    )
    if params.embeddings:
        llm = config.LLMConfig.model_validate(params.llm)
        embedded = themes.archive_pairs(inp.theme_vectors, inp.chunks, plan, llm, params.embeddings)
        pairs = itertools.chain(pairs, embedded)
    if inp.get("theme_names"):
        pairs = itertools.chain(pairs, naming.archive_pairs(inp.theme_names))
    n = archive.export(pairs, snakemake.output.archive)  # noqa: F821
    log.info("archived %d answers of %d codings (failed chunks have none)", n, len(codings))
