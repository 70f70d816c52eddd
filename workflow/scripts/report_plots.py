"""Write the figures and pages that `snakemake --report` embeds: codes, quote grounding, failures, model
calls, and agreement with human coders. Only the columns each needs are read, and every
figure and page has a size bounded by the codebook and the `*_shown` caps, whatever the number of chunks."""

from qualcode import logs
from qualcode.inputs import codebook
from qualcode.reporting import report

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out, params = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    n_coded = report.write_report(
        codes=inp.codes,
        codings=inp.codings,
        llm_calls=inp.llm_calls,
        failures=inp.failures,
        cb=codebook.load(inp.codebook),
        out={name: out[name] for name in report.OUTPUTS},
        documents_shown=params.documents_shown,
        failures_shown=params.failures_shown,
    )
    log.info("report: %d figures and pages for %d coded chunks", len(report.OUTPUTS), n_coded)
    outputs = {name: out[name] for name in report.VALIDATION_OUTPUTS}
    n = report.write_validation_report(
        inp.agreement, inp.confusion, params.reference, outputs, params.models, params.unit
    )
    log.info("agreement: %d rows drawn and listed", n)
    n = report.write_prevalence_report(inp.prevalence, {name: out[name] for name in report.PREVALENCE_OUTPUTS})
    log.info("prevalence: %d rows drawn", n)
