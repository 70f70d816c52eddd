"""The themes: a seeded clustering of every coded chunk's vector, the theme tables (stamped with the run's content
hashes), the excerpts by theme and centrality, and the methods sentence."""

from qualcode import config, logs
from qualcode.analysis import themes

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    settings = config.ThemesConfig.model_validate(params.themes)
    result = themes.write_outputs(inp.vectors, inp.excerpts, settings, out, metadata=params.origin)
    log.info("themes: %s", result.summary())
