"""Write the agreement, confusion and stability tables: the model's codes against the human coders'."""

from qualcode import codebook, logs, validity

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    rows, skipped = validity.write_validation(
        cb=codebook.load(inp.codebook),
        documents=inp.documents,
        chunks=inp.chunks,
        codes=inp.codes,
        codings=inp.codings,
        gold_files=list(inp.gold),
        settings=params.validation,
        out=out,
        metadata=params.origin,
    )
    for problem in skipped:
        log.warning("skipped: %s", problem)
    for name, n in rows.items():
        log.info("%s: %d rows", name, n)
    if not inp.gold:
        log.info("no human codings (validation.gold is empty): the validation tables are empty")
