"""The themes' figures and page for `snakemake --report`: the map, themes by codes, and each theme with quotes."""

from qualcode import logs
from qualcode.reporting import themes

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    drawn = themes.plot_map(inp.chunk_themes, inp.themes, out.map, params.seed)
    themes.plot_theme_codes(inp.theme_codes, inp.themes, out.codes)
    n = themes.write_page(inp.themes, inp.excerpts, inp.methods, out.page)
    log.info("themes: %d passages mapped, %d themes listed", drawn, n)
