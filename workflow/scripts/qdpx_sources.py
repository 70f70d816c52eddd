"""Write results/sources.qdpx: every source of codes (model, arms, human coders, consensus) as its own user."""

from qualcode import logs
from qualcode.inputs import codebook
from qualcode.validity import disagreements

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    counts = disagreements.write_sources_qdpx(
        cb=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codes=inp.codes,
        arms=dict(zip(params.arms, inp.arms, strict=True)),
        gold_files=list(inp.gold),
        settings=params.validation,
        model=params.model,
        version=params.version,
        out=out.qdpx,
        sample=params.sample,
    )
    log.info("sources.qdpx: %(sources)d sources, %(selections)d selections, %(codings)d codings", counts)
