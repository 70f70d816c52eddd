"""Write results/project.qdpx and results/codebook.qdc (REFI-QDA), each checked against the standard's schema."""

from qualcode import logs
from qualcode.exchange import qdpx
from qualcode.inputs import codebook

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    counts = qdpx.write_exports(
        codebook=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codes=inp.codes,
        model=params.model,
        version=params.version,
        qdpx_out=out.qdpx,
        qdc_out=out.qdc,
        ungrounded=params.ungrounded,
    )
    log.info("project.qdpx: %(sources)d sources, %(selections)d selections, %(codings)d codings", counts)
