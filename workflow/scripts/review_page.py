"""Write results/review/index.html (every quote highlighted in its document, codes beside each chunk) and
results/review/review.csv (one row per chunk and field, with empty decision columns)."""

from qualcode import logs
from qualcode.exchange import review
from qualcode.inputs import codebook

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    counts = review.write_review(
        codebook=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codings=inp.codings,
        codes=inp.codes,
        failures=inp.failures,
        model=params.model,
        page_out=out.page,
        csv_out=out.csv,
        disagreements=inp.disagreements,
    )
    log.info("review page: %(documents)d documents, %(chunks)d chunks; review.csv: %(rows)d rows", counts)
