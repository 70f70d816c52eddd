"""The agreement with human coders: the forest plot of each code's coefficients and the agreement page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..validity.validation import RARE, majority_basis, positives, too_rare
from . import pages
from .figures import _figure, _message, _short

FOREST_METRICS = (("krippendorff_alpha", "Krippendorff's alpha"), ("cohen_kappa", "Cohen's kappa"))
CODES_SHOWN = 60  # rows of the forest plot
POOR, GOOD = 0.667, 0.8  # Krippendorff's (2004) thresholds, drawn on the plot


def _code_label(field: str, value: str | None) -> str:
    return field if value is None or value != value else f"{field}: {value}"


def forest(agreement: pd.DataFrame, reference: str, models: Sequence[str] = ("model",)) -> pd.DataFrame:
    """The forest plot's rows: per code and metric, each human-human pair (comparison "human-human", labelled with
    the pair) and each model (the run's, each arm) against the reference ("<model> vs <reference>"), each with
    whether it is too rare to mean much (`validation.too_rare`)."""
    rare = too_rare(agreement)
    df = agreement[agreement.metric.isin([m for m, _ in FOREST_METRICS]) & agreement.rater_b.notna()].copy()
    df["rare"] = rare[df.index]
    humans = ~df.rater_a.isin(models) & ~df.rater_b.isin(models) & (df.rater_b != "majority")
    scored = df.rater_a.isin(models) & (df.rater_b == reference)
    df["comparison"] = np.where(humans, "human-human", df.rater_a + " vs " + reference)
    df["label"] = np.where(humans, df.rater_a + " vs " + df.rater_b, df.comparison)
    if "split" in df and (df.split != "all").any():  # dev and holdout (validation.holdout): each its own row
        df["comparison"] = df.comparison + " (" + df.split + ")"
        df["label"] = df.label + " (" + df.split + ")"
    df = df[humans | scored]
    df["code"] = [_code_label(f, v) for f, v in zip(df.field, df.value, strict=True)]
    return df


FOREST_COLOURS = ("#e8590c", "#2f9e44", "#ae3ec9", "#f59f00", "#495057")  # the models
HUMAN_COLOURS = ("#1c7ed6", "#4dabf7", "#1864ab", "#74c0fc")  # the human pairs: blues


def plot_agreement(
    agreement: pd.DataFrame, reference: str, path: str | Path, models: Sequence[str] = ("model",)
) -> None:
    """Each code's alpha and kappa with 95% intervals: each human-human pair (blues, a row each) beside each model
    against the reference (orange for the run's model, other colours for arms), each with the number of units
    compared, hollow (and starred) where a rater marked the code present on fewer than `RARE` units, with
    Krippendorff's thresholds 0.667 and 0.8 as dashed lines."""
    rows = forest(agreement, reference, models)
    if rows.empty:
        _message(path, "No human codings were given (validation.gold), so there is no agreement to show.")
        return
    codes = list(dict.fromkeys(rows.code))
    hidden = max(0, len(codes) - CODES_SHOWN)
    codes = codes[:CODES_SHOWN]
    y = {c: i for i, c in enumerate(codes)}
    pairs = sorted(set(rows.label[rows.comparison.str.startswith("human-human")]))
    named = [f"{m} vs {reference}" for m in models]
    found = set(rows.label)
    scored = [c for n in named for c in (n, f"{n} (dev)", f"{n} (holdout)") if c in found] or named
    labels = [*pairs, *scored]
    step = 0.6 / max(len(labels) - 1, 1)
    colours = {p: HUMAN_COLOURS[i % len(HUMAN_COLOURS)] for i, p in enumerate(pairs)}
    colours |= {c: FOREST_COLOURS[i % len(FOREST_COLOURS)] for i, c in enumerate(scored)}
    styles = {
        c: (colours[c], "o" if c in pairs else "s", -0.3 + i * step if len(labels) > 1 else 0.0)
        for i, c in enumerate(labels)
    }
    with _figure(path, 9.0, 1.6 + 0.24 * len(codes) * max(1, len(labels) / 3)) as fig:
        axes = fig.subplots(1, len(FOREST_METRICS), sharey=True, squeeze=False)[0]
        for ax, (metric, title) in zip(axes, FOREST_METRICS, strict=True):
            for label, (colour, marker, dy) in styles.items():
                part = rows[(rows.metric == metric) & (rows.label == label) & rows.code.isin(y)]
                part = part[part.estimate.notna()]
                if part.empty:
                    continue
                ys = part.code.map(y).to_numpy() + dy
                low = (part.estimate - part.ci_low.fillna(part.estimate)).clip(lower=0)
                high = (part.ci_high.fillna(part.estimate) - part.estimate).clip(lower=0)
                for rare in (False, True):  # hollow: too few positives for the coefficient to mean much
                    at = (part.rare == rare).to_numpy()
                    if at.any():
                        ax.errorbar(part.estimate[at], ys[at], xerr=[low[at], high[at]], fmt=marker, color=colour,
                                    mfc="white" if rare else colour, ms=4, lw=1, capsize=2,
                                    label=None if rare and (~at).any() else label)  # fmt: skip
                right = part.ci_high.fillna(part.estimate).to_numpy()
                for x, yy, n, rare in zip(right, ys, part.n_units, part.rare, strict=True):
                    ax.annotate(f"{n}{'*' if rare else ''}", (x, yy), xytext=(3, 0), textcoords="offset points",
                                va="center", fontsize=5, color=colour)  # fmt: skip
            for x in (POOR, GOOD):
                ax.axvline(x, color="#868e96", lw=0.8, ls="--")
            ax.axvline(0, color="k", lw=0.6)
            ax.set_xlim(-1.05, 1.2)
            ax.set_title(title, loc="left")
            ax.set_xlabel("estimate (95% bootstrap interval); number: units compared")
        axes[0].set_yticks(range(len(codes)), [_short(c) for c in codes])
        axes[0].set_ylim(len(codes) - 0.5, -0.5)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
        note = f"; {hidden} more codes not shown (see agreement.parquet)" if hidden else ""
        rare_note = (f"\nhollow, *: a rater marked the code present on fewer than {RARE} units (the interval means "
                     "little)" if rows.rare.any() else "")  # fmt: skip
        fig.suptitle(f"Agreement per code: human coders beside the model{note}{rare_note}")


UNIT_NAMES = {"document": "documents", "chunk": "chunks"}


def agreement_html(
    agreement: pd.DataFrame,
    confusion: pd.DataFrame,
    reference: str,
    path: str | Path,
    models: Sequence[str] = ("model",),
    unit: str = "document",
) -> None:
    """The chance-corrected coefficients as a table, with the units behind each and the raters' positives, poor and
    too-rare ones marked, the unit named, what the majority rested on, and the model's confusion tables."""
    units = UNIT_NAMES.get(unit, unit)
    if agreement.empty:
        body = (
            "<h1>Agreement with human coders</h1>\n<p>No human codings were given (<code>validation.gold</code>).</p>"
        )
        pages.write(path, pages.page("Agreement", body))
        return
    count = positives(agreement)
    rare = too_rare(agreement)
    df = agreement[agreement.rater_b.notna() & agreement.metric.isin(["krippendorff_alpha", "cohen_kappa", "gwet_ac1",
                                                                         "f1"])].copy()  # fmt: skip
    df["rare"] = rare[df.index]
    df["code"] = [_code_label(f, v) for f, v in zip(df.field, df.value, strict=True)]
    df["pair"] = df.rater_a + " vs " + df.rater_b
    split = "split" in df and (df.split != "all").any()  # dev and holdout apart (validation.holdout)
    df["estimate (95% CI)"] = [
        ("undefined" if pd.isna(e) else f"{e:.2f} ({lo:.2f} to {hi:.2f})" if pd.notna(lo) else f"{e:.2f}")
        + (" *" if r else "")
        for e, lo, hi, r in zip(df.estimate, df.ci_low, df.ci_high, df.rare, strict=True)
    ]
    df[f"{units} compared"] = df.n_units
    splits = df["split"] if "split" in df else pd.Series("all", index=df.index)
    df["positives (a / b)"] = [
        "" if v is None or v != v else f"{count.get((s, f, v, a), '?')} / {count.get((s, f, v, b), '?')}"
        for s, f, v, a, b in zip(splits, df.field, df.value, df.rater_a, df.rater_b, strict=True)
    ]
    intro = (f"<p>The unit of analysis is the <strong>{html.escape(unit)}</strong> (<code>validation.unit</code>): "
             f"every number of units below counts {html.escape(units)}.")  # fmt: skip
    basis = majority_basis(agreement)
    if basis is not None and reference == "majority":
        n, one, tied = basis
        intro += (f" The coders' majority (the reference) covers {n} {html.escape(units)}: on {one} of them only "
                  f"one coder coded the unit, so the majority there is that coder's code; {tied} were left out as "
                  "ties.")  # fmt: skip
    intro += "</p>\n"
    if df.rare.any():
        intro += (f"<p><strong>*</strong> {int(df.rare.sum())} rows: a rater marked the code present on fewer than "
                  f"{RARE} {html.escape(units)}; such a coefficient and its interval rest on a handful of units and "
                  "mean little (an interval can be zero-wide).</p>\n")  # fmt: skip
    verdict = ""
    for m in models:
        scored = agreement[(agreement.rater_a == m) & (agreement.rater_b == reference)]
        if split:  # one split's codes: the holdout where the model was scored on it, else dev
            scored = scored[scored.split == ("holdout" if (scored.split == "holdout").any() else "dev")]
        alpha = scored[scored.metric == "krippendorff_alpha"]
        poor = int((alpha.assessment == "poor").sum())
        if poor:
            who = "the model" if m == "model" else f"arm {html.escape(m)}"
            verdict += (
                f"<p><strong>Agreement between {who} and {html.escape(reference)} is poor (alpha below 0.667) for "
                f"{poor} of {len(alpha)} codes</strong>: do not rely on its codes for them.</p>\n"
            )
    cols = [*(["split"] if split else []), "code", "pair", "metric", "estimate (95% CI)", f"{units} compared",
            "positives (a / b)", "assessment"]  # fmt: skip
    held = (
        "<p>The units are split into <em>dev</em> (where the arms are compared and the configuration is chosen) "
        "and <em>holdout</em> (set aside: only the run's model is scored on it); see the split column.</p>\n"
        if split else ""
    )  # fmt: skip
    body = (
        "<h1>Agreement with human coders</h1>\n" + intro + held + verdict
        + df[cols].to_html(index=False, na_rep="", border=0, escape=True)
    )  # fmt: skip
    if not confusion.empty:
        body += f"\n<h2>Confusion: model against the reference ({html.escape(units)})</h2>\n"
        for field, part in confusion.groupby("field", sort=False):
            table = part.pivot_table(index="reference_value", columns="rater_value", values="n_units", aggfunc="sum")
            body += f"<h3>{html.escape(str(field))}</h3>\n" + table.to_html(border=0)
    pages.write(path, pages.page("Agreement", body))
