"""Propose a codebook from a sample of the chunks: open coding, consolidation, naming, and every output for the
researcher to curate (see qualcode.induction)."""

from qualcode import config, logs
from qualcode.coding import asker, cache
from qualcode.induction import publish, run

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, params, out = snakemake.input, snakemake.params, snakemake.output  # noqa: F821
    # credentials are never params (Snakemake keeps params in its metadata): they come from the run's config
    llm = config.connectable(params.llm, snakemake.config)  # noqa: F821
    cfg = config.InductionConfig.model_validate(params.induction)
    prompts = {"system": inp.system, "user": inp.user, "name": inp.name}
    setup = run.prepare(cfg, llm, prompts, inp.chunks, inp.documents, inp.extended or None)
    limits = config.LimitsConfig.model_validate(params.limits)
    price = config.Price(**params.price) if params.price else None
    with cache.AnswerCache(params.cache_dir) as answers:

        def ask(questions):
            return asker.ask_questions(questions, llm, answers, limits=limits, price=price, journal=params.journal)

        vectorise = run.ProviderVectors(cfg, llm, answers, limits, price) if cfg.embeddings else setup.vectorise
        proposal = run.propose(setup.chunks, cfg, llm, setup.templates, ask, vectorise, setup.extend)
        if cfg.embeddings:  # the embedding requests join the proposal's replay archive
            proposal.pairs.extend(vectorise.pairs())
    publish.write(proposal, out, setup.texts, f"qualcode {params.version}", {"qualcode.version": params.version})
    log.info("%s %s", proposal.sentence, run.summary(proposal.asked))
