"""Add this run's agreement to the codebook's history (validation.history) and copy the history into results/."""

from qualcode import logs
from qualcode.inputs import codebook
from qualcode.validity import history

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    rows = history.update(
        agreement=inp.agreement,
        codebook=codebook.load(inp.codebook),
        codebook_path=inp.codebook,
        store=params.store,
        out=out.history,
        metadata=params.origin,
    )
    log.info("history: %d rows over %d revisions", len(rows), rows["revision"].nunique() if len(rows) else 0)
