# Figures and pages for `snakemake --report report.html`; each output is one entry of the report, with the
# caption under workflow/report/ saying how to read it. One job draws them all, agreement with human coders
# included: each job costs a Python start and its imports at the end of every run.

# The report's text (workflow/report/*.rst) describes the run whose figures it shows, from the run's manifest, read
# when the report is made: `snakemake --report` is often given other settings than the run was, or none.
config["qualcode_run"] = qualcode.outputs.provenance.RunDescription(
    f"{RESULTS}/manifest.json", CFG
)


rule report_plots:
    input:
        codes=f"{RESULTS}/codes.parquet",
        codings=f"{RESULTS}/codings.parquet",
        llm_calls=f"{RESULTS}/llm_calls.parquet",
        failures=f"{RESULTS}/failures.parquet",
        agreement=f"{RESULTS}/agreement.parquet",
        confusion=f"{RESULTS}/confusion.parquet",
        prevalence=f"{RESULTS}/prevalence.parquet",
        codebook=CFG.codebook,
    output:
        frequencies=report(
            f"{RESULTS}/report/code_frequencies.png",
            caption="../report/code_frequencies.rst",
            category="Codes",
        ),
        cooccurrence=report(
            f"{RESULTS}/report/code_cooccurrence.png",
            caption="../report/code_cooccurrence.rst",
            category="Codes",
        ),
        documents=report(
            f"{RESULTS}/report/documents_by_codes.png",
            caption="../report/documents_by_codes.rst",
            category="Codes",
        ),
        grounding=report(
            f"{RESULTS}/report/quote_grounding.png",
            caption="../report/quote_grounding.rst",
            category="Quality",
        ),
        failures=report(
            f"{RESULTS}/report/failures.html",
            caption="../report/failures.rst",
            category="Quality",
        ),
        usage=report(
            f"{RESULTS}/report/model_calls.html",
            caption="../report/model_calls.rst",
            category="Quality",
        ),
        agreement_plot=report(
            f"{RESULTS}/report/agreement.png",
            caption="../report/agreement.rst",
            category="Validity",
        ),
        agreement_page=report(
            f"{RESULTS}/report/agreement.html",
            caption="../report/agreement_table.rst",
            category="Validity",
        ),
        prevalence_plot=report(
            f"{RESULTS}/report/prevalence.png",
            caption="../report/prevalence.rst",
            category="Validity",
        ),
    log:
        f"{RESULTS}/logs/report_plots/report_plots.log",
    benchmark:
        f"{RESULTS}/benchmarks/report_plots/report_plots.tsv"
    params:
        # caps that keep the figures and pages the same size at any corpus size; the captions quote them
        documents_shown=30,
        failures_shown=200,
        reference=CFG.validation.reference,
        unit=CFG.validation.unit,
        models=qualcode.config.model_raters(CFG),
    script:
        "../scripts/report_plots.py"
