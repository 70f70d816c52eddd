"""Figures and pages for `snakemake --report`: what was coded, how well the quotes hold, what failed, what
the model calls cost, and the methods paragraph.

Counting (DataFrames in, DataFrames out) is kept apart from drawing, so the numbers can be tested without
looking at pixels. Figures are PNG at a fixed dpi with no software or date stamp, so identical tables give
identical bytes and a rerun does not look like a change.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .codebook import Codebook, CodeField

logger = logging.getLogger(__name__)

DPI = 110
# Figure objects without pyplot: no backend switch and no global figure registry, so importing this
# module leaves an interactive session alone and each figure is freed when the function returns.
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",
}
CHOICE_TYPES = ("single_choice", "multiple_choice", "boolean")
GROUNDING = {  # category: colour, in reading order from best to worst
    "exact": "#2b8a3e",
    "normalised": "#8ce99a",
    "ungrounded": "#e03131",
    "empty": "#adb5bd",
    "not_asked": "#dee2e6",
}
HEATMAP_ANNOTATE_MAX = 1600  # cells; beyond this the numbers are unreadable anyway
LABEL_MAX = 40
CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;max-width:75em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
    "pre{white-space:pre-wrap;background:#f6f6f6;padding:.75em}"
)


# -- counting ----------------------------------------------------------------------------------------


def coded_fields(cb: Codebook) -> list[CodeField]:
    """The fields whose answers are codes (choice and boolean); text answers are free prose."""
    return [f for f in cb.fields if f.type in CHOICE_TYPES]


def _values(f: CodeField) -> list[str]:
    return [v.name for v in f.values] if f.values else ["true", "false"]


def code_order(cb: Codebook) -> list[str]:
    """Every `field:value` the codebook allows, in codebook order."""
    return [f"{f.name}:{v}" for f in coded_fields(cb) for v in _values(f)]


def _codes(codes: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """One row per chunk and `field:value` code, choice and boolean fields only."""
    df = codes[codes.field.isin([f.name for f in coded_fields(cb)])]
    out = pd.DataFrame({"doc_id": df.doc_id, "chunk_id": df.chunk_id, "code": df.field + ":" + df.value})
    unknown = sorted(set(out.code) - set(code_order(cb)))
    if unknown:
        # Possible only with tables from another codebook version; they would silently vanish otherwise.
        logger.warning("%d code(s) not in the codebook are left out of the figures, e.g. %s", len(unknown), unknown[0])
    return out[~out.code.isin(unknown)].drop_duplicates()


def _observed(c: pd.DataFrame, cb: Codebook) -> list[str]:
    seen = set(c.code)
    return [k for k in code_order(cb) if k in seen]


def frequencies(codes: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """Chunks coded with each value of each choice and boolean field; values never used count 0."""
    counts = codes.groupby(["field", "value"]).chunk_id.nunique()
    rows = [
        {"field": f.name, "value": v, "chunks": int(counts.get((f.name, v), 0))}
        for f in coded_fields(cb)
        for v in _values(f)
    ]
    return pd.DataFrame(rows, columns=["field", "value", "chunks"])


def _crosstab(index: pd.Series, columns: pd.Series, rows: Sequence[str], cols: Sequence[str]) -> pd.DataFrame:
    """Counts of (index, columns) pairs on the given rows and columns; unlike pd.crosstab, also of no data."""
    if index.empty:
        return pd.DataFrame(0, index=list(rows), columns=list(cols))
    t = pd.crosstab(index, columns).reindex(index=list(rows), columns=list(cols), fill_value=0)
    return t.rename_axis(index=None, columns=None)


def cooccurrence(codes: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """Chunks coded with both codes, for every pair of codes that occur; the diagonal is each code's count."""
    c = _codes(codes, cb)
    m = _crosstab(c.chunk_id, c.code, c.chunk_id.unique(), _observed(c, cb))
    v = m.to_numpy()  # DataFrame.T fails on a frame without columns
    return pd.DataFrame(v.T @ v, index=m.columns, columns=m.columns)


def documents_by_codes(codes: pd.DataFrame, doc_ids: Sequence[str], cb: Codebook) -> pd.DataFrame:
    """Chunks of each document (rows, all of `doc_ids`) coded with each code that occurs (columns)."""
    c = _codes(codes, cb)
    return _crosstab(c.doc_id, c.code, doc_ids, _observed(c, cb))


def grounding(codes: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """Quotes per field (rows) and grounding category (columns), for the fields that ask for a quote.

    A multiple-choice answer repeats its one quote on every value's row, so quotes are counted once per
    chunk and field, as in the methods paragraph."""
    asked = [f.name for f in cb.fields if f.quote]
    q = codes[codes.field.isin(asked)].drop_duplicates(["chunk_id", "field"])
    found = set(q.grounding)
    columns = [g for g in GROUNDING if g in found or g in ("exact", "normalised", "ungrounded")]
    columns += sorted(found - set(columns))
    return _crosstab(q.field, q.grounding, asked, columns)


def llm_usage(calls: pd.DataFrame) -> pd.DataFrame:
    """Calls, cache hits, failures, re-asks, tokens, latency and cost per model asked for and served."""
    df = calls.assign(model_served=calls.model_served.fillna("n/a"), failed=calls.status != "coded")
    g = df.groupby(["model_asked", "model_served"], sort=True)
    out = g.agg(
        calls=("request_hash", "size"),
        cache_hits=("cache_hit", "sum"),
        failed=("failed", "sum"),
        reasks=("reasks", "sum"),
        retries=("retries", "sum"),
        tokens_in=("tokens_in", "sum"),
        tokens_out=("tokens_out", "sum"),
        latency_median_s=("latency_s", "median"),
        latency_max_s=("latency_s", "max"),
    )
    # NaN, not 0, when no price is set: an unknown cost is not a free one.
    out["cost"] = g.cost.sum(min_count=1)
    return out.reset_index()


# -- figures -----------------------------------------------------------------------------------------


@contextmanager
def _figure(path: str | Path, width: float, height: float) -> Iterator[Figure]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        yield fig
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, metadata={"Software": None})


def _message(path: str | Path, text: str) -> None:
    """A small figure in place of an empty plot, so the report still has an entry that says why."""
    with _figure(path, 4.5, 1.2) as fig:
        fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)


def _short(label: str, n: int = LABEL_MAX) -> str:
    return label if len(label) <= n else label[: n // 2 - 1] + "…" + label[-(n // 2) :]


def plot_frequencies(freq: pd.DataFrame, n_coded: int, path: str | Path) -> None:
    """One horizontal bar panel per field, values in codebook order."""
    fields = list(dict.fromkeys(freq.field))
    if not fields:
        _message(path, "The codebook has no choice or boolean fields to count.")
        return
    ncols = min(2, len(fields))
    nrows = math.ceil(len(fields) / ncols)
    per_row = [max((freq.field == f).sum() for f in fields[r * ncols : (r + 1) * ncols]) for r in range(nrows)]
    top = max(freq.chunks.max(), 1)
    with _figure(path, 4.2 * ncols, 0.9 + sum(0.6 + 0.2 * n for n in per_row)) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"height_ratios": [n + 3 for n in per_row]})
        for i, (ax, field) in enumerate(zip(axes.flat, fields, strict=False)):
            f = freq[freq.field == field]
            bars = ax.barh(range(len(f)), f.chunks, color="#4c6ef5")
            ax.bar_label(bars, padding=2, fontsize=7)
            ax.set_yticks(range(len(f)), [_short(v) for v in f.value])
            # The same bar thickness in every panel of a row: a 3-value field is not drawn 3 times fatter.
            ax.set_ylim(per_row[i // ncols] - 0.5, -0.5)
            ax.set_xlim(0, top * 1.15 + 0.5)
            ax.set_title(field, loc="left")
        for ax in axes.flat[len(fields) :]:
            ax.set_visible(False)
        fig.supxlabel("chunks")
        fig.suptitle(f"Chunks coded with each value (n = {n_coded} coded chunks)")


def plot_heatmap(matrix: pd.DataFrame, path: str | Path, title: str, xlabel: str, ylabel: str) -> None:
    """Counts as shaded cells, numbered when there are few enough to read; zero cells are left blank."""
    if matrix.empty or not matrix.to_numpy().any():
        _message(path, f"{title}: no codes to show.")
        return
    h, w = matrix.shape
    rows, cols = [_short(str(i)) for i in matrix.index], [_short(str(c)) for c in matrix.columns]
    label_w = 0.06 * max(map(len, rows))
    label_h = 0.06 * max(map(len, cols))
    with _figure(path, max(4.0, 1.6 + label_w + 0.26 * w), max(2.5, 1.0 + label_h + 0.22 * h)) as fig:
        ax = fig.subplots()
        values = matrix.to_numpy()
        im = ax.imshow(values, cmap="Blues", aspect="auto", vmin=0, interpolation="nearest")
        ax.set_xticks(range(w), cols, rotation=90)
        ax.set_yticks(range(h), rows)
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
        if h * w <= HEATMAP_ANNOTATE_MAX:
            top = values.max()
            for (i, j), v in pd.DataFrame(values).stack().items():
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="white" if v > top / 2 else "k")
        fig.colorbar(im, ax=ax, shrink=min(1.0, 6 / max(h, 1) + 0.3), label="chunks", ticks=MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")


def plot_grounding(table: pd.DataFrame, path: str | Path) -> None:
    """Stacked bars: the share of each field's quotes in each grounding category, with counts."""
    if table.empty or not table.to_numpy().any():
        _message(path, "No evidence quotes to check: no field asked for one, or nothing was coded.")
        return
    shares = table.div(table.sum(axis=1).replace(0, 1), axis=0)
    with _figure(path, 6.5, 1.5 + 0.32 * len(table)) as fig:
        ax = fig.subplots()
        left = pd.Series(0.0, index=table.index)
        for cat in table.columns:
            bars = ax.barh(table.index, shares[cat], left=left, color=GROUNDING.get(cat, "#868e96"), label=cat)
            labels = [str(n) if s >= 0.06 else "" for n, s in zip(table[cat], shares[cat], strict=True)]
            ax.bar_label(bars, labels=labels, label_type="center", fontsize=7)
            left += shares[cat]
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_xlabel("share of the field's quotes")
        fig.legend(ncols=len(table.columns), loc="outside lower center", frameon=False)
        ax.set_title("Evidence quotes found in the source text", loc="left")


# -- pages -------------------------------------------------------------------------------------------


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _write(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def failures_html(failures: pd.DataFrame, path: str | Path, raw_max: int = 300) -> None:
    """Every unreadable file and uncoded chunk with the reason; a page saying so when there are none."""
    if failures.empty:
        body = "<h1>Failures</h1>\n<p>No failures: every input file was read and every chunk was coded.</p>"
    else:
        df = failures[["stage", "source_file", "doc_id", "chunk_id", "reason", "attempts", "raw_answer"]].copy()
        # Raw answers of a looping model run to thousands of characters; the table keeps them in full.
        df["raw_answer"] = df.raw_answer.map(lambda s: s if not isinstance(s, str) else _short(s, raw_max))
        body = (
            f"<h1>Failures</h1>\n<p>{len(df)} failure(s); the full rows are in <code>failures.parquet</code>.</p>\n"
            + df.to_html(index=False, na_rep="", border=0)
        )
    _write(path, _page("Failures", body))


def usage_html(usage: pd.DataFrame, path: str | Path) -> None:
    """The per-model table of `llm_usage`, with readable numbers and 'no price set' for an unknown cost."""
    df = usage.copy()
    for col in ("latency_median_s", "latency_max_s"):
        df[col] = df[col].map(lambda x: "" if pd.isna(x) else f"{x:.2f}")
    df["cost"] = df.cost.map(lambda x: "no price set" if pd.isna(x) else f"{x:.4f}")
    body = "<h1>Model calls</h1>\n" + df.to_html(index=False, na_rep="", border=0)
    _write(path, _page("Model calls", body))


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def markdown_html(text: str) -> str:
    """The Markdown that methods.md uses (headings, paragraphs, pipe tables, fenced code, `code`) as HTML.

    Not a general Markdown parser: it keeps the report free of one more dependency for one known file."""
    out: list[str] = []
    para: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if table:
            head, *body = table
            out.append("<table>\n<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
            out.append("</table>")
            table.clear()

    lines = iter(text.splitlines())
    for line in lines:
        heading = re.match(r"(#{1,6}) (.*)", line)
        if line.startswith("```"):
            flush()
            code = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                code.append(inner)
            out.append(f"<pre>{html.escape(chr(10).join(code))}</pre>")
        elif heading:
            flush()
            n = len(heading.group(1))
            out.append(f"<h{n}>{_inline(heading.group(2))}</h{n}>")
        elif line.startswith("|"):
            if para:
                flush()
            if not re.fullmatch(r"\|[\s:|-]+\|", line):  # the |---|---| rule under the header
                table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif not line.strip():
            flush()
        else:
            para.append(line)
    flush()
    return "\n".join(out)


def methods_html(markdown: str, path: str | Path) -> None:
    _write(path, _page("Methods", markdown_html(markdown)))
