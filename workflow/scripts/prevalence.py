"""Write prevalence.parquet: each code's prevalence over the corpus from the model's codes, and corrected with the
human-coded probability sample (or the reason it cannot be)."""

from qualcode import logs
from qualcode.inputs import codebook
from qualcode.validity import prevalence

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    rows, refused = prevalence.write_prevalence(
        cb=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codings=inp.codings,
        codes=inp.codes,
        gold_files=list(inp.gold),
        settings=params.validation,
        out=out.prevalence,
        metadata=params.origin,
        pilot=params.pilot,
    )
    if refused:
        log.warning("no corrected prevalence: %s", refused)
    log.info("rows: %d", rows)
