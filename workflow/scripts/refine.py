"""Propose revisions of the lowest-agreement codes: results/refine/codebook.proposed.yaml and changes.md."""

from qualcode import config, logs
from qualcode.coding import cache
from qualcode.inputs import codebook
from qualcode.negotiation import refine

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    # credentials are never params: they come from the run's config
    llm = config.connectable(params.llm, snakemake.config)  # noqa: F821
    with cache.AnswerCache(params.cache_dir) as answers:
        counts = refine.refine(
            llm=llm,
            limits=config.LimitsConfig.model_validate(params.limits),
            price=config.Price(**params.price) if params.price else None,
            cb=codebook.load(inp.codebook),
            codebook_path=inp.codebook,
            agreement=inp.agreement,
            disagreements=inp.disagreements,
            documents=inp.documents,
            cache=answers,
            n_codes=params.refine["codes"],
            n_disagreements=params.refine["disagreements"],
            out=out,
            journal=params.journal,
        )
    log.info("refine: %s", counts)
