"""The report's figures: PNG at a fixed dpi with no software or date stamp, so identical tables give
identical bytes and a rerun does not look like a change, each of a size set by the codebook and fixed caps,
not by the number of chunks."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .codes import GROUNDING

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
HEATMAP_ANNOTATE_MAX = 1600  # cells; beyond this the numbers are unreadable anyway
LABEL_MAX = 40


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
