"""Write the figures and pages that `snakemake --report` embeds: codes, quote grounding, failures, model
calls and the methods paragraph."""

from pathlib import Path

import pandas as pd

from qualcode import codebook, logs, report

with logs.job(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inp, out = snakemake.input, snakemake.output  # noqa: F821
    cb = codebook.load(inp.codebook)
    codes = pd.read_parquet(inp.codes)
    codings = pd.read_parquet(inp.codings, columns=["doc_id", "status"])
    n_coded = int((codings.status == "coded").sum())
    report.plot_frequencies(report.frequencies(codes, cb), n_coded, out.frequencies)
    report.plot_heatmap(report.cooccurrence(codes, cb), out.cooccurrence, "Codes in the same chunk", "code", "code")
    documents = report.documents_by_codes(codes, codings.doc_id.unique(), cb)
    report.plot_heatmap(documents, out.documents, "Chunks of each document per code", "code", "document")
    report.plot_grounding(report.grounding(codes, cb), out.grounding)
    report.failures_html(pd.read_parquet(inp.failures), out.failures)
    report.usage_html(report.llm_usage(pd.read_parquet(inp.llm_calls)), out.usage)
    report.methods_html(Path(inp.methods).read_text(encoding="utf-8"), out.methods)
    log.info("report: %d figures and pages for %d coded chunks", len(out), n_coded)
