"""Apply a filled review.csv or a reviewed .qdpx to the model's codes: results/codes_reviewed.parquet."""

from qualcode import logs
from qualcode.exchange import corrections
from qualcode.inputs import codebook

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    counts, notes = corrections.write_reviewed(
        corrections=inp.corrections,
        codebook=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codes=inp.codes,
        model=params.model,
        reviewer=params.reviewer,
        ungrounded=params.ungrounded,
        out=out.codes_reviewed,
        metadata=params.origin,
    )
    for note in notes:
        log.warning("%s", note)
    log.info("codes_reviewed: %s", ", ".join(f"{n} {d}" for d, n in counts.items()) or "no rows")
