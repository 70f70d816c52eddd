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
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..inputs.codebook import Codebook, CodeField
from ..outputs import tables
from ..validity.validation import human_raters, reference_used
from . import pages

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
TOP_DOCUMENTS = 30  # rows of the documents heatmap
FAILURES_SHOWN = 200  # rows of the failures page
REASON_KINDS_SHOWN = 50  # rows of the failures page's count by reason
OUTPUTS = ("frequencies", "cooccurrence", "documents", "grounding", "failures", "usage")
CODE_COLUMNS = ["doc_id", "chunk_id", "field", "value", "grounding"]
FAILURE_COLUMNS = ["stage", "source_file", "doc_id", "chunk_id", "reason", "attempts", "raw_answer"]
USAGE_COLUMNS = [
    "status",
    "model_asked",
    "model_served",
    "cache_hit",
    "reasks",
    "retries",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "latency_s",
    "cost",
    "batch_id",
]

INTEGERS = {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}  # nullable, for pages

Tabular = pd.DataFrame | pa.Table


# -- reading -----------------------------------------------------------------------------------------


def _arrow(table: Tabular, columns: Sequence[str]) -> pa.Table:
    """The key columns of a DataFrame or Arrow table, as an Arrow table of strings."""
    if isinstance(table, pd.DataFrame):
        schema = pa.schema([(c, pa.string()) for c in columns])
        return pa.Table.from_pandas(table[list(columns)], schema=schema, preserve_index=False)
    return table.select(list(columns))


def _map(column: pa.Array | pa.ChunkedArray, f: Callable[[str], int]) -> np.ndarray:
    """`f` of every cell, with `f` called once per distinct string of each chunk rather than once per row."""
    if isinstance(column, pa.ChunkedArray):
        return np.concatenate([np.zeros(0, np.int64), *(_map(c, f) for c in column.chunks)])
    encoded = column if pa.types.is_dictionary(column.type) else column.dictionary_encode()
    if encoded.null_count:
        raise ValueError("a key column of the table has empty (null) cells; the table does not follow its schema")
    if not len(encoded):
        return np.zeros(0, np.int64)
    lookup = np.array([f(s) for s in encoded.dictionary.to_pylist()], np.int64)
    return lookup[encoded.indices.to_numpy(zero_copy_only=False)]


def _numbering(ids: dict[str, int]) -> Callable[[str], int]:
    return lambda s: ids.setdefault(s, len(ids))


def _factorise(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """An integer per row and the distinct values they point to, without a Python object per row: the
    indices of a dictionary column as they are (no copy when the column is one chunk)."""
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    # Chunks from different row groups, or encoded one by one, may each carry their own dictionary.
    chunks = [c for c in column.unify_dictionaries().chunks if len(c)]
    if not chunks:
        return np.zeros(0, np.int32), pa.array([], pa.string())
    if any(c.null_count for c in chunks):
        raise ValueError("a key column of the table has empty (null) cells; the table does not follow its schema")
    indices = [c.indices.to_numpy() for c in chunks]
    return indices[0] if len(indices) == 1 else np.concatenate(indices), chunks[0].dictionary


def _distinct(a: np.ndarray) -> np.ndarray:
    """The distinct values of `a`, sorted (np.unique's hash path is far slower on large int64 arrays)."""
    a = np.sort(a)
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if len(a) else a


@dataclass(frozen=True, eq=False)
class CodedChunks:
    """codes.parquet reduced to what the figures count: the distinct (chunk, code) pairs of the choice and
    boolean fields as integers, sorted by chunk then code, and the quotes per field and grounding category.

    `code` indexes `codes` (every `field:value` of the codebook, in codebook order); `doc` indexes
    `doc_ids`, the documents named in the table; `chunk` numbers the chunks in the table."""

    codes: tuple[str, ...]
    doc_ids: pa.Array
    chunk: np.ndarray
    doc: np.ndarray
    code: np.ndarray
    grounding: pd.DataFrame

    @property
    def chunk_counts(self) -> np.ndarray:
        """Chunks coded with each code, in the order of `codes`."""
        return np.bincount(self.code, minlength=len(self.codes))

    @property
    def observed(self) -> list[int]:
        """The codes used at least once, in codebook order."""
        return [int(k) for k in np.flatnonzero(self.chunk_counts)]


def index_codes(codes: Tabular, cb: Codebook) -> CodedChunks:
    """Count-ready integers from a codes table with `CODE_COLUMNS` (a DataFrame or an Arrow table): each
    key column as dictionary indices, and Python strings only for the distinct fields and codes."""
    t = _arrow(codes, CODE_COLUMNS)
    doc, doc_ids = _factorise(t["doc_id"])
    chunk, chunk_ids = _factorise(t["chunk_id"])
    field, field_names = _factorise(t["field"])
    value, values = _factorise(t["value"])
    g, categories = _factorise(t["grounding"])
    del t
    fields = field_names.to_pylist()  # one per codebook field
    order = code_order(cb)
    position = {name: i for i, name in enumerate(order)}
    k = max(len(order), 1)

    # Rows of choice and boolean fields; text answers (one distinct value per chunk) are never named. Each
    # field's values that occur are named once, into a (field, value) -> code table; no per-row strings.
    coded = {f.name for f in coded_fields(cb)}
    lookup = np.full((len(fields), len(values)), -1, np.int64)
    unknown = []
    for i, f in enumerate(fields):
        if f in coded:
            used = np.flatnonzero(np.bincount(value[field == i], minlength=len(values)))
            names = [f"{f}:{v}" for v in values.take(pa.array(used, pa.int64())).to_pylist()]
            lookup[i, used] = [position.get(n, -1) for n in names]
            unknown += [n for n in names if n not in position]
    if unknown:
        # Possible only with tables from another codebook version; they would silently vanish otherwise.
        logger.warning(
            "%d code(s) not in the codebook are left out of the figures, e.g. %s", len(unknown), min(unknown)
        )
    code = lookup[field, value] if len(field) else np.zeros(0, np.int64)
    known = np.flatnonzero(code >= 0)
    key = _distinct(chunk[known].astype(np.int64) * k + code[known])  # sorted by chunk, then code
    doc_of_chunk = np.zeros(len(chunk_ids), np.int64)
    doc_of_chunk[chunk] = doc  # a chunk is in one document

    # A multiple-choice answer repeats its one quote on every value's row: count the first row per chunk
    # and quoted field.
    asked = [f.name for f in cb.fields if f.quote]
    quote_of = np.array([asked.index(f) if f in asked else -1 for f in fields], np.int32)[field]
    q = np.flatnonzero(quote_of >= 0)
    _, first = np.unique(chunk[q].astype(np.int64) * max(len(asked), 1) + quote_of[q], return_index=True)
    q = q[first]
    counts = np.bincount(quote_of[q] * len(categories) + g[q], minlength=len(asked) * len(categories))
    table = pd.DataFrame(counts.reshape(len(asked), len(categories)), index=asked, columns=categories.to_pylist())
    found = {c for c in table.columns if table[c].any()}
    columns = [c for c in GROUNDING if c in found or c in ("exact", "normalised", "ungrounded")]
    columns += sorted(found - set(columns))

    return CodedChunks(
        codes=tuple(order),
        doc_ids=doc_ids,
        chunk=key // k,
        doc=doc_of_chunk[key // k],
        code=key % k,
        grounding=table.reindex(columns=columns, fill_value=0).astype(np.int64),
    )


def read_codes(path: str | Path, cb: Codebook) -> CodedChunks:
    """codes.parquet by `index_codes`: only the columns the figures use, read as dictionaries."""
    return index_codes(tables.read(path, "codes", CODE_COLUMNS, read_dictionary=CODE_COLUMNS), cb)


def _coded(codes: Tabular | CodedChunks, cb: Codebook) -> CodedChunks:
    return codes if isinstance(codes, CodedChunks) else index_codes(codes, cb)


# -- counting ----------------------------------------------------------------------------------------


def coded_fields(cb: Codebook) -> list[CodeField]:
    """The fields whose answers are codes (choice and boolean); text answers are free prose."""
    return [f for f in cb.fields if f.type in CHOICE_TYPES]


def _values(f: CodeField) -> list[str]:
    return [v.name for v in f.values] if f.values else ["true", "false"]


def code_order(cb: Codebook) -> list[str]:
    """Every `field:value` the codebook allows, in codebook order."""
    return [f"{f.name}:{v}" for f in coded_fields(cb) for v in _values(f)]


def frequencies(codes: Tabular | CodedChunks, cb: Codebook) -> pd.DataFrame:
    """Chunks coded with each value of each choice and boolean field; values never used count 0."""
    counts = _coded(codes, cb).chunk_counts
    rows = [(f.name, v) for f in coded_fields(cb) for v in _values(f)]
    return pd.DataFrame(
        {"field": [f for f, _ in rows], "value": [v for _, v in rows], "chunks": counts.astype(np.int64)},
        columns=["field", "value", "chunks"],
    )


def cooccurrence(codes: Tabular | CodedChunks, cb: Codebook) -> pd.DataFrame:
    """Chunks coded with both codes, for every pair of codes that occur; the diagonal is each code's count.

    Each chunk's pairs of codes are its (chunk, code) pairs `j` apart, for j = 1, 2, ... up to the most
    codes a chunk has: whole-array integer counts, with memory of the order of the pairs themselves."""
    c = _coded(codes, cb)
    k = len(c.codes)
    upper = np.zeros(k * k, np.int64)
    for j in range(1, len(c.chunk)):
        same = c.chunk[j:] == c.chunk[:-j]  # pairs are sorted by chunk then code, so a < b below
        if not same.any():
            break  # no chunk has more than j codes
        upper += np.bincount(c.code[:-j][same] * k + c.code[j:][same], minlength=k * k)
    upper = upper.reshape(k, k)
    full = upper + upper.T + np.diag(c.chunk_counts)
    observed = c.observed
    names = [c.codes[i] for i in observed]
    return pd.DataFrame(full[np.ix_(observed, observed)], index=names, columns=names)


def documents_by_codes(
    codes: Tabular | CodedChunks, doc_ids: Sequence[str] | pa.Array, cb: Codebook, top: int | None = TOP_DOCUMENTS
) -> pd.DataFrame:
    """Chunks of a document (rows) coded with each code that occurs (columns), for the `top` documents of
    `doc_ids` with most coded chunks (all of them if `top` is None), most first, ties in `doc_ids` order."""
    c = _coded(codes, cb)
    doc_ids = doc_ids.cast(pa.string()) if isinstance(doc_ids, pa.Array) else pa.array(list(doc_ids), pa.string())
    # Each pair's document as its row in doc_ids; documents not in doc_ids (-1) are left out.
    row_of = pc.index_in(c.doc_ids, value_set=doc_ids).fill_null(-1).to_numpy(zero_copy_only=False)
    pair_row = row_of.astype(np.int64)[c.doc] if len(c.doc) else np.zeros(0, np.int64)
    first = np.ones(len(c.chunk), bool)
    first[1:] = c.chunk[1:] != c.chunk[:-1]  # one pair per chunk: pairs are sorted by chunk
    chunk_row = pair_row[first]
    coded_chunks = np.bincount(chunk_row[chunk_row >= 0], minlength=len(doc_ids))
    ranked = np.argsort(-coded_chunks, kind="stable")
    shown = ranked if top is None else ranked[:top]
    rank = np.full(len(doc_ids) + 1, -1, np.int64)  # the last entry is for row -1
    rank[shown] = np.arange(len(shown))
    pair_rank = rank[pair_row]
    observed = c.observed
    column = np.full(len(c.codes), -1, np.int64)
    column[observed] = np.arange(len(observed))
    keep = pair_rank >= 0
    cells = np.bincount(pair_rank[keep] * len(observed) + column[c.code[keep]], minlength=len(shown) * len(observed))
    return pd.DataFrame(
        cells.reshape(len(shown), len(observed)),
        index=doc_ids.take(pa.array(shown, pa.int64())).to_pylist(),
        columns=[c.codes[k] for k in observed],
    )


def grounding(codes: Tabular | CodedChunks, cb: Codebook) -> pd.DataFrame:
    """Quotes per field (rows) and grounding category (columns), for the fields that ask for a quote.

    A multiple-choice answer repeats its one quote on every value's row, so quotes are counted once per
    chunk and field, as in the methods paragraph."""
    return _coded(codes, cb).grounding


def llm_usage(calls: Tabular) -> pd.DataFrame:
    """Calls, cache hits, failures, re-asks, tokens (in, of which served from the provider's prompt cache, and out),
    calls answered through a Batch API, latency and cost (what was paid) per model asked for and served.

    Summed by pyarrow on the columns of `USAGE_COLUMNS`; the median latency, exact, per group in numpy."""
    t = calls if isinstance(calls, pa.Table) else pa.Table.from_pandas(calls[USAGE_COLUMNS], preserve_index=False)
    t = pa.table(
        {
            "model_asked": t["model_asked"].cast(pa.string()),
            "model_served": pc.fill_null(t["model_served"].cast(pa.string()), "n/a"),
            "failed": pc.cast(pc.not_equal(t["status"], "coded"), pa.int64()),
            "cache_hit": pc.cast(t["cache_hit"], pa.int64()),
            "batch": pc.cast(pc.is_valid(t["batch_id"]), pa.int64()),
            **{c: t[c] for c in ("reasks", "retries", "tokens_in", "tokens_out", "tokens_cached", "latency_s", "cost")},
        }
    )
    keys = ["model_asked", "model_served"]
    zero_if_empty = pc.ScalarAggregateOptions(min_count=0)
    out = (
        t.group_by(keys, use_threads=False)
        .aggregate(
            [
                ("failed", "count", pc.CountOptions(mode="all")),
                ("cache_hit", "sum", zero_if_empty),
                ("failed", "sum", zero_if_empty),
                ("reasks", "sum", zero_if_empty),
                ("retries", "sum", zero_if_empty),
                ("tokens_in", "sum", zero_if_empty),
                ("tokens_out", "sum", zero_if_empty),
                ("tokens_cached", "sum", zero_if_empty),
                ("batch", "sum", zero_if_empty),
                ("latency_s", "max"),
                ("cost", "sum"),  # null, not 0, when no price is set: an unknown cost is not a free one
            ]
        )
        .sort_by([(k, "ascending") for k in keys])
        .to_pandas()
    )
    medians = []
    for asked, served in zip(out.model_asked, out.model_served, strict=True):
        group = pc.and_(pc.equal(t["model_asked"], asked), pc.equal(t["model_served"], served))
        latency = t["latency_s"].filter(group).drop_null().to_numpy()
        medians.append(float(np.median(latency)) if len(latency) else math.nan)
    out["latency_median_s"] = medians
    summed = ("failed", "reasks", "retries", "tokens_in", "tokens_out", "tokens_cached", "batch", "cost")
    names = {f"{c}_sum": c for c in summed}
    out = out.rename(
        columns={**names, "failed_count": "calls", "cache_hit_sum": "cache_hits", "latency_s_max": "latency_max_s"}
    )
    columns = ["model_asked", "model_served", "calls", "cache_hits", "failed", "reasks", "retries", "tokens_in"]
    columns += ["tokens_cached", "tokens_out", "batch", "latency_median_s", "latency_max_s", "cost"]
    return out[columns]


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


def plot_documents(matrix: pd.DataFrame, n_documents: int, path: str | Path) -> None:
    """The heatmap of `documents_by_codes`; the title says how many of the `n_documents` are not shown."""
    title = "Chunks of each document per code"
    if n_documents > len(matrix):
        title += (
            f"\nthe {len(matrix)} documents with most coded chunks, most first;"
            f" {n_documents - len(matrix):,} more of {n_documents:,} not shown"
        )
    plot_heatmap(matrix, path, title, "code", "document")


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


def reason_kind(reason: str) -> str:
    """A failure reason without its particulars, to count failures by: addresses and numbers masked, and
    cut at the first colon, parenthesis or semicolon (`not valid JSON: Expecting value at character 5` is
    `not valid JSON`; `http://host/v1 answered HTTP 500 after 3 attempts` is `<url> answered HTTP N after N
    attempts`)."""
    s = re.sub(r"\b[a-zA-Z][\w+.-]*://\S+", "<url>", reason)
    s = re.sub(r"\d+(?:[.,]\d+)*", "N", s).removeprefix("<url>: ")
    return _short(re.split(r": | \(|; ", s, maxsplit=1)[0].strip(), 80) or "unknown"


def failure_reasons(failures: Tabular) -> pd.DataFrame:
    """Failures per stage and `reason_kind`, most first (ties by stage and kind): one row per kind, whatever
    the number of failures; each distinct reason is looked at once."""
    t = _arrow(failures, ["stage", "reason"])
    stages: dict[str, int] = {}
    kinds: dict[str, int] = {}
    stage = _map(t["stage"], _numbering(stages))
    kind = _map(t["reason"], lambda r: kinds.setdefault(reason_kind(r), len(kinds)))
    n_kinds, stage_names, kind_names = max(len(kinds), 1), list(stages), list(kinds)
    pair, counts = np.unique(stage * n_kinds + kind, return_counts=True)
    df = pd.DataFrame(
        {
            "stage": [stage_names[p // n_kinds] for p in pair],
            "reason": [kind_names[p % n_kinds] for p in pair],
            "failures": counts.astype(np.int64),
        },
        columns=["stage", "reason", "failures"],
    )
    df = df.sort_values(["failures", "stage", "reason"], ascending=[False, True, True], kind="stable")
    return df.reset_index(drop=True)


def _first_failures(failures: Tabular | str | Path, n: int) -> tuple[pd.DataFrame, Tabular]:
    """The first `n` rows with every column, and the stage and reason columns of all rows."""
    if isinstance(failures, str | Path):
        # Streamed a page at a time: a row group of long raw answers is not read whole for 200 rows.
        tables.check(failures, "failures", FAILURE_COLUMNS)
        with pq.ParquetFile(failures, buffer_size=1 << 20, pre_buffer=False) as f:
            first = next(f.iter_batches(batch_size=max(n, 1), columns=FAILURE_COLUMNS), None)
        # attempts as whole numbers, not floats, when the ingest rows leave it empty
        head = (
            first.to_pandas(types_mapper=INTEGERS.get) if first is not None else pd.DataFrame(columns=FAILURE_COLUMNS)
        )
        reasons = tables.read(failures, "failures", ["stage", "reason"], read_dictionary=["stage", "reason"])
        return head.head(n), reasons
    if isinstance(failures, pa.Table):
        return failures.slice(0, n).select(FAILURE_COLUMNS).to_pandas(types_mapper=INTEGERS.get), failures
    return failures.head(n).reindex(columns=FAILURE_COLUMNS), failures


def failures_html(
    failures: Tabular | str | Path,
    path: str | Path,
    raw_max: int = 300,
    shown: int = FAILURES_SHOWN,
    kinds_shown: int = REASON_KINDS_SHOWN,
) -> None:
    """Failures counted by stage and kind of reason, then the first `shown` unreadable files and uncoded
    chunks with their reason; a page saying so when there are none. `failures` is the table or the path
    of failures.parquet, of which only the stage and reason columns are read in full."""
    head, everything = _first_failures(failures, shown)
    total = len(everything)
    if not total:
        body = "<h1>Failures</h1>\n<p>No failures: every input file was read and every chunk was coded.</p>"
        pages.write(path, pages.page("Failures", body))
        return
    kinds = failure_reasons(everything)
    per_stage = kinds.groupby("stage").failures.sum()
    stages = ", ".join(f"{n:,} at stage <em>{html.escape(s)}</em>" for s, n in per_stage.items())
    more_kinds = ""
    if len(kinds) > kinds_shown:
        rest = kinds.iloc[kinds_shown:]
        more_kinds = f"<p>{len(rest):,} more kinds of reason, {rest.failures.sum():,} failure(s), not listed.</p>\n"
        kinds = kinds.head(kinds_shown)
    # Raw answers of a looping model run to thousands of characters; the table keeps them in full.
    head = head.assign(raw_answer=head.raw_answer.map(lambda s: s if not isinstance(s, str) else _short(s, raw_max)))
    listed = (
        f"the first {len(head):,}; the other {total - len(head):,} are only in <code>failures.parquet</code>"
        if total > len(head)
        else "all of them"
    )
    body = (
        f"<h1>Failures</h1>\n<p>{total:,} failure(s): {stages}. The full rows, with every raw answer, are in "
        "<code>failures.parquet</code> in the results directory.</p>\n"
        "<h2>By reason</h2>\n<p>Reasons are grouped by their words before the first colon, parenthesis or semicolon, "
        "with numbers shown as N and addresses as &lt;url&gt;.</p>\n"
        + kinds.to_html(index=False, border=0)
        + "\n"
        + more_kinds
        + f"<h2>Failures, in table order ({listed})</h2>\n"
        + head.to_html(index=False, na_rep="", border=0)
    )
    pages.write(path, pages.page("Failures", body))


def usage_html(usage: pd.DataFrame, path: str | Path) -> None:
    """The per-model table of `llm_usage`, with readable numbers and 'no price set' for an unknown cost."""
    df = usage.copy()
    for col in ("latency_median_s", "latency_max_s"):
        df[col] = df[col].map(lambda x: "" if pd.isna(x) else f"{x:.2f}")
    df["cost"] = df.cost.map(lambda x: "no price set" if pd.isna(x) else f"{x:.4f}")
    body = "<h1>Model calls</h1>\n" + df.to_html(index=False, na_rep="", border=0)
    pages.write(path, pages.page("Model calls", body))


# -- the whole report --------------------------------------------------------------------------------


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


# -- agreement with human coders -------------------------------------------------------------------------------

VALIDATION_OUTPUTS = ("agreement_plot", "agreement_page")
FOREST_METRICS = (("krippendorff_alpha", "Krippendorff's alpha"), ("cohen_kappa", "Cohen's kappa"))
CODES_SHOWN = 60  # rows of the forest plot
POOR, GOOD = 0.667, 0.8  # Krippendorff's (2004) thresholds, drawn on the plot


def _code_label(field: str, value: str | None) -> str:
    return field if value is None or value != value else f"{field}: {value}"


def forest(agreement: pd.DataFrame, reference: str, models: Sequence[str] = ("model",)) -> pd.DataFrame:
    """The forest plot's rows: per code and metric, each human-human pair ("human-human") and each model (the
    run's, each arm) against the reference ("<model> vs <reference>")."""
    df = agreement[agreement.metric.isin([m for m, _ in FOREST_METRICS]) & agreement.rater_b.notna()].copy()
    humans = ~df.rater_a.isin(models) & ~df.rater_b.isin(models) & (df.rater_b != "majority")
    scored = df.rater_a.isin(models) & (df.rater_b == reference)
    df["comparison"] = np.where(humans, "human-human", df.rater_a + " vs " + reference)
    df = df[humans | scored]
    df["code"] = [_code_label(f, v) for f, v in zip(df.field, df.value, strict=True)]
    return df


FOREST_COLOURS = ("#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#495057")  # the models; human-human is blue


def plot_agreement(
    agreement: pd.DataFrame, reference: str, path: str | Path, models: Sequence[str] = ("model",)
) -> None:
    """Each code's alpha and kappa with 95% intervals: human-human pairs (blue) beside each model against the
    reference (orange for the run's model, other colours for arms), with Krippendorff's thresholds 0.667 and 0.8
    as dashed lines."""
    rows = forest(agreement, reference, models)
    if rows.empty:
        _message(path, "No human codings were given (validation.gold), so there is no agreement to show.")
        return
    codes = list(dict.fromkeys(rows.code))
    hidden = max(0, len(codes) - CODES_SHOWN)
    codes = codes[:CODES_SHOWN]
    y = {c: i for i, c in enumerate(codes)}
    comparisons = ["human-human", *[f"{m} vs {reference}" for m in models]]
    step = 0.6 / max(len(comparisons) - 1, 1)
    styles = {
        c: ("#1c7ed6" if i == 0 else FOREST_COLOURS[(i - 1) % len(FOREST_COLOURS)], "o" if i == 0 else "s",
            -0.3 + i * step if len(comparisons) > 1 else 0.0)
        for i, c in enumerate(comparisons)
    }  # fmt: skip
    with _figure(path, 9.0, 1.4 + 0.24 * len(codes)) as fig:
        axes = fig.subplots(1, len(FOREST_METRICS), sharey=True, squeeze=False)[0]
        for ax, (metric, title) in zip(axes, FOREST_METRICS, strict=True):
            for comparison, (colour, marker, dy) in styles.items():
                part = rows[(rows.metric == metric) & (rows.comparison == comparison) & rows.code.isin(y)]
                part = part[part.estimate.notna()]
                ys = part.code.map(y).to_numpy() + dy
                low = (part.estimate - part.ci_low.fillna(part.estimate)).clip(lower=0)
                high = (part.ci_high.fillna(part.estimate) - part.estimate).clip(lower=0)
                ax.errorbar(part.estimate, ys, xerr=[low, high], fmt=marker, color=colour, ms=4, lw=1, capsize=2,
                            label=comparison)  # fmt: skip
            for x in (POOR, GOOD):
                ax.axvline(x, color="#868e96", lw=0.8, ls="--")
            ax.axvline(0, color="k", lw=0.6)
            ax.set_xlim(-1.05, 1.05)
            ax.set_title(title, loc="left")
            ax.set_xlabel("estimate (95% bootstrap interval)")
        axes[0].set_yticks(range(len(codes)), [_short(c) for c in codes])
        axes[0].set_ylim(len(codes) - 0.5, -0.5)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
        note = f"; {hidden} more codes not shown (see agreement.parquet)" if hidden else ""
        fig.suptitle(f"Agreement per code: human coders beside the model{note}")


def agreement_html(
    agreement: pd.DataFrame,
    confusion: pd.DataFrame,
    reference: str,
    path: str | Path,
    models: Sequence[str] = ("model",),
) -> None:
    """The chance-corrected coefficients as a table, poor ones marked, and the model's confusion tables."""
    if agreement.empty:
        body = (
            "<h1>Agreement with human coders</h1>\n<p>No human codings were given (<code>validation.gold</code>).</p>"
        )
        pages.write(path, pages.page("Agreement", body))
        return
    df = agreement[agreement.rater_b.notna() & agreement.metric.isin(["krippendorff_alpha", "cohen_kappa", "gwet_ac1",
                                                                         "f1"])].copy()  # fmt: skip
    df["code"] = [_code_label(f, v) for f, v in zip(df.field, df.value, strict=True)]
    df["pair"] = df.rater_a + " vs " + df.rater_b
    df["estimate (95% CI)"] = [
        "undefined" if pd.isna(e) else f"{e:.2f} ({lo:.2f} to {hi:.2f})" if pd.notna(lo) else f"{e:.2f}"
        for e, lo, hi in zip(df.estimate, df.ci_low, df.ci_high, strict=True)
    ]
    verdict = ""
    for m in models:
        scored = agreement[(agreement.rater_a == m) & (agreement.rater_b == reference)]
        alpha = scored[scored.metric == "krippendorff_alpha"]
        poor = int((alpha.assessment == "poor").sum())
        if poor:
            who = "the model" if m == "model" else f"arm {html.escape(m)}"
            verdict += (
                f"<p><strong>Agreement between {who} and {html.escape(reference)} is poor (alpha below 0.667) for "
                f"{poor} of {len(alpha)} codes</strong>: do not rely on its codes for them.</p>\n"
            )
    cols = ["code", "pair", "metric", "estimate (95% CI)", "n_units", "assessment"]
    body = (
        "<h1>Agreement with human coders</h1>\n" + verdict
        + df[cols].to_html(index=False, na_rep="", border=0, escape=True)
    )  # fmt: skip
    if not confusion.empty:
        body += "\n<h2>Confusion: model against the reference</h2>\n"
        for field, part in confusion.groupby("field", sort=False):
            table = part.pivot_table(index="reference_value", columns="rater_value", values="n_units", aggfunc="sum")
            body += f"<h3>{html.escape(str(field))}</h3>\n" + table.to_html(border=0)
    pages.write(path, pages.page("Agreement", body))


def write_validation_report(
    agreement: str | Path,
    confusion: str | Path,
    reference: str,
    out: Mapping[str, str | Path],
    models: Sequence[str] = ("model",),
) -> int:
    """The forest plot and the agreement page; returns the number of agreement rows. `models`: the run's model
    and the arms, as named in the table."""
    a = tables.read(agreement, "agreement").to_pandas()
    c = tables.read(confusion, "confusion").to_pandas()
    reference = reference_used(human_raters(a, models), reference)
    plot_agreement(a, reference, out["agreement_plot"], models)
    agreement_html(a, c, reference, out["agreement_page"], models)
    return len(a)
