"""The pages on what the model calls cost and what failed: the per-model usage table and the failures page,
which lists the first `FAILURES_SHOWN` failures under counts of every kind of reason."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..outputs import tables
from . import pages
from .codes import Tabular, _arrow
from .figures import _short

FAILURES_SHOWN = 200  # rows of the failures page
REASON_KINDS_SHOWN = 50  # rows of the failures page's count by reason
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
