"""The agreement with human coders: the forest plot of each code's coefficients and the agreement page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import pages
from .figures import _figure, _message, _short

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
