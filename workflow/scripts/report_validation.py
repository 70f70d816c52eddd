"""Write the validity entries of the report: the forest plot of agreement and the agreement page."""

from qualcode import logs, report

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    outputs = {name: out[name] for name in report.VALIDATION_OUTPUTS}
    n = report.write_validation_report(inp.agreement, inp.confusion, params.reference, outputs, params.models)
    log.info("agreement: %d rows drawn and listed", n)
