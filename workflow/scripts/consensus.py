"""The reviewer's decisions (review.corrections) as the gold source `consensus`: results/review/consensus.parquet."""

from qualcode import logs
from qualcode.exchange import corrections
from qualcode.inputs import codebook

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    n = corrections.write_consensus(
        corrections=inp.corrections,
        codebook=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codes=inp.codes,
        model=params.model,
        reviewer=params.reviewer,
        out=out.consensus,
        metadata=params.origin,
    )
    log.info("consensus: %d rows", n)
