"""The themes: a seeded clustering of every coded chunk's vector, named by the model (through the answer cache), the
theme tables (stamped with the run's content hashes), the excerpts by theme and centrality, and the methods sentence."""

from contextlib import nullcontext

from qualcode import config, logs
from qualcode.analysis import naming, themes
from qualcode.coding import cache

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    settings = config.ThemesConfig.model_validate(params.themes)
    asked = []
    with cache.AnswerCache(params.cache_dir) if settings.names else nullcontext() as answers:

        def namer(evidence):
            # credentials are never params (Snakemake keeps params in its metadata): they come from the run's config
            llm = config.connectable(params.llm, snakemake.config)  # noqa: F821
            limits = config.LimitsConfig.model_validate(params.limits)
            price = config.Price(**params.price) if params.price else None
            names, questions = naming.name_themes(evidence, llm, answers, limits, price, params.journal)
            asked.extend(questions)
            return names

        result = themes.write_outputs(inp.vectors, inp.excerpts, settings, out, params.origin,
                                      namer if settings.names else None)  # fmt: skip
    naming.write_asked(asked, out.asked)
    log.info("themes: %s", result.summary())
