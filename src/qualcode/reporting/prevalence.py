"""The corrected prevalence figure: each code's share of units from the model's codes beside the estimate corrected
with the human-coded probability sample and its 95% interval, for the corpus and each group of validation.by."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from .figures import _figure, _message, _short

ROWS_SHOWN = 60


def _label(row: pd.Series) -> str:
    group = "" if row["group"] is None or row["group"] != row["group"] else f" [{row['group']}]"
    return _short(f"{row['field']}: {row['value']}") + group


def plot_prevalence(prevalence: pd.DataFrame, path: str | Path) -> None:
    """Naive (grey) and corrected (blue, with its interval) prevalence per code and group; without corrected
    estimates the model's prevalences alone, under the reason none could be corrected."""
    if prevalence.empty:
        _message(path, "The codebook has no choice or boolean fields: no prevalence to estimate.")
        return
    refused = prevalence.refused.dropna()
    overall = prevalence[prevalence.by.isna()]
    # the groups beside their codes when they fit; else the whole corpus only (each code's row first)
    rows = prevalence if len(prevalence) <= ROWS_SHOWN else overall
    rows = rows.head(ROWS_SHOWN).reset_index(drop=True)
    labels = [_label(r) for _, r in rows.iterrows()]
    hidden = len(overall) - int(rows.by.isna().sum())
    by = prevalence.by.dropna()
    with _figure(path, 7.5, 1.8 + 0.22 * len(rows)) as fig:
        ax = fig.subplots()
        ys = np.arange(len(rows))
        ax.plot(rows.naive, ys, "o", color="#868e96", ms=4, label="model's codes (naive)")
        ok = rows.corrected.notna().to_numpy()
        shown = rows.corrected.clip(0, 1)  # an estimate outside [0, 1] (a small group) is drawn at the edge
        fragile = rows.note.fillna("").str.startswith("fragile").to_numpy()
        low = (shown - rows.ci_low.fillna(shown)).clip(lower=0).to_numpy()
        high = (rows.ci_high.fillna(shown) - shown).clip(lower=0).to_numpy()
        for weak in (False, True):  # hollow: few human positives or disagreements, an interval to doubt
            at = ok & (fragile == weak)
            if at.any():
                ax.errorbar(shown[at], ys[at] + 0.2, xerr=[low[at], high[at]], fmt="s", color="#1c7ed6",
                            mfc="white" if weak else "#1c7ed6", ms=4, lw=1, capsize=2,
                            label="corrected (fewer than 5 positives or disagreements)" if weak else "corrected",
                            )  # fmt: skip
        for y, n, o in zip(ys, rows.n_sample, ok, strict=True):
            if o:
                ax.annotate(f"n={n}", (1.0, y + 0.2), xytext=(2, 0), textcoords="offset points", va="center",
                            fontsize=5, color="#1c7ed6", annotation_clip=False)  # fmt: skip
        ax.set_yticks(list(ys), labels)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel(f"share of {rows.unit.iloc[0]}s with the code (95% interval; n: human-coded sampled units)")
        fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=7)
        title = "Prevalence per code: the model's codes and corrected with the human-coded sample"
        if len(refused):
            title += "\n" + "\n".join(textwrap.wrap("Not corrected: " + str(refused.iloc[0]), 110))
        if hidden:
            title += f"\n{hidden} more codes not shown (see prevalence.parquet)"
        if len(by) and not rows.by.notna().any():
            title += f"\nby {by.iloc[0]}: too many rows to draw, see prevalence.parquet"
        fig.suptitle(title, fontsize=8)
