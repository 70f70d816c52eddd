"""Figures and pages for `snakemake --report`: what was coded, how well the quotes hold, what failed, what
the model calls cost, and the methods paragraph.

Counting (tables in, small DataFrames out) is kept apart from drawing, so the numbers can be tested without
looking at pixels. Figures are PNG at a fixed dpi with no software or date stamp, so identical tables give
identical bytes and a rerun does not look like a change.

The cost is bounded at any corpus size. Tables are read column by column (only the columns used, strings
as dictionaries: an integer per row and each distinct string once), counted with numpy on those integers,
and every figure and page has a size set by the codebook and fixed caps, not by the number of chunks: the
documents heatmap shows the `TOP_DOCUMENTS` documents with most coded chunks and says how many more there
are, and the failures page lists the first `FAILURES_SHOWN` failures under counts of every kind of reason.

This module writes the report from its parts: `codes` counts the coded chunks, `figures` draws them, `usage`
makes the model calls and failures pages, `agreement` the agreement with human coders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow.compute as pc

from ..inputs.codebook import Codebook
from ..outputs import tables
from ..validity.validation import human_raters, reference_used
from .agreement import agreement_html, plot_agreement
from .codes import TOP_DOCUMENTS, cooccurrence, documents_by_codes, frequencies, grounding, read_codes
from .figures import plot_documents, plot_frequencies, plot_grounding, plot_heatmap
from .prevalence import plot_prevalence
from .usage import FAILURES_SHOWN, USAGE_COLUMNS, failures_html, llm_usage, usage_html

OUTPUTS = ("frequencies", "cooccurrence", "documents", "grounding", "failures", "usage")
VALIDATION_OUTPUTS = ("agreement_plot", "agreement_page")
PREVALENCE_OUTPUTS = ("prevalence_plot",)


def write_report(
    codes: str | Path,
    codings: str | Path,
    llm_calls: str | Path,
    failures: str | Path,
    cb: Codebook,
    out: Mapping[str, str | Path],
    documents_shown: int = TOP_DOCUMENTS,
    failures_shown: int = FAILURES_SHOWN,
) -> int:
    """Every figure and page of the report from the tables' paths, reading only the columns each needs;
    `out` names a file for each of `OUTPUTS`. Returns the number of coded chunks."""
    coded = read_codes(codes, cb)
    chunks = tables.read(codings, "codings", ["doc_id", "status"])
    n_coded = int(pc.sum(pc.equal(chunks["status"], "coded")).as_py() or 0)
    doc_ids = pc.unique(chunks["doc_id"])
    del chunks
    plot_frequencies(frequencies(coded, cb), n_coded, out["frequencies"])
    plot_heatmap(cooccurrence(coded, cb), out["cooccurrence"], "Codes in the same chunk", "code", "code")
    plot_documents(documents_by_codes(coded, doc_ids, cb, documents_shown), len(doc_ids), out["documents"])
    plot_grounding(grounding(coded, cb), out["grounding"])
    failures_html(failures, out["failures"], shown=failures_shown)
    usage_html(llm_usage(tables.read(llm_calls, "llm_calls", USAGE_COLUMNS)), out["usage"])
    return n_coded


def write_validation_report(
    agreement: str | Path,
    confusion: str | Path,
    reference: str,
    out: Mapping[str, str | Path],
    models: Sequence[str] = ("model",),
    unit: str = "document",
) -> int:
    """The forest plot and the agreement page; returns the number of agreement rows. `models`: the run's model
    and the arms, as named in the table; `unit`: validation.unit."""
    a = tables.read(agreement, "agreement").to_pandas()
    c = tables.read(confusion, "confusion").to_pandas()
    reference = reference_used(human_raters(a, models), reference)
    plot_agreement(a, reference, out["agreement_plot"], models)
    agreement_html(a, c, reference, out["agreement_page"], models, unit)
    return len(a)


def write_prevalence_report(prevalence: str | Path, out: Mapping[str, str | Path]) -> int:
    """The prevalence figure (naive beside corrected); returns the number of prevalence rows."""
    p = tables.read(prevalence, "prevalence").to_pandas()
    plot_prevalence(p, out["prevalence_plot"])
    return len(p)
