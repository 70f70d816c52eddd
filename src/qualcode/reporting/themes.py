"""The themes in the report: a 2-D map of the passages coloured by theme, a heat map of themes by codes, and a page
with each theme's description and three quotes in context. Bounded in size at any corpus size: the map draws a
seeded sample of at most MAP_POINTS passages, the heat map the codes most over-represented in some theme, the page
only each theme's most central passages."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from ..outputs import tables
from . import pages
from .figures import _figure, _message, _short, plot_heatmap

MAP_POINTS = 3_000
HEATMAP_CODES = 30  # columns of the heat map at most: the codes with the highest lift in any theme
QUOTES = 3
AROUND = 160  # characters of context on each side of a quote


def plot_map(chunk_themes: str | Path, themes: str | Path, path: str | Path, seed: int = 0) -> int:
    """The passages on the themes' seeded 2-D projection, coloured by theme; returns the points drawn."""
    ct = tables.read(chunk_themes, "chunk_themes", ["theme", "x", "y"]).to_pandas()
    names = tables.read(themes, "themes", ["theme", "name"]).to_pandas()
    if ct.empty:
        _message(path, "Themes: no coded passages to map.")
        return 0
    if len(ct) > MAP_POINTS:
        ct = ct.iloc[np.sort(np.random.default_rng(seed).choice(len(ct), MAP_POINTS, replace=False))]
    with _figure(path, 7.0, 5.0) as fig:
        ax = fig.subplots()
        cmap = matplotlib_cmap(len(names))
        for i, row in enumerate(names.itertuples()):
            mine = ct[ct.theme == row.theme]
            ax.scatter(mine.x, mine.y, s=8, alpha=0.7, color=cmap(i), label=_short(f"{row.theme}. {row.name}"))
        left = ct[ct.theme.isna()]
        if len(left):
            ax.scatter(left.x, left.y, s=8, alpha=0.5, color="lightgrey", label="unassigned")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"Passages by theme ({len(ct):,} drawn)", loc="left")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    return len(ct)


def matplotlib_cmap(n: int):
    from matplotlib import colormaps

    return colormaps["tab20" if n > 10 else "tab10"]


def plot_theme_codes(theme_codes: str | Path, themes: str | Path, path: str | Path) -> None:
    """Themes by codes: the chunks of each theme with each code, for the codes most over-represented somewhere."""
    tc = tables.read(theme_codes, "theme_codes").to_pandas()
    names = tables.read(themes, "themes", ["theme", "name"]).to_pandas()
    if tc.empty:
        _message(path, "Themes by codes: no codes to show.")
        return
    tc["code"] = tc.field + ":" + tc.value
    top = tc.groupby("code").lift.max().sort_values(ascending=False, kind="stable").head(HEATMAP_CODES).index
    matrix = tc[tc.code.isin(top)].pivot_table(index="theme", columns="code", values="n_chunks", fill_value=0)
    matrix = matrix.reindex(index=names.theme, fill_value=0)
    matrix.index = [f"{t}. {n}" for t, n in zip(names.theme, names.name, strict=True)]
    plot_heatmap(matrix.astype(int), path, "Themes by codes (chunks)", "code", "theme")


def quotes_in_context(text: str, codes: list[dict], around: int = AROUND) -> tuple[str, str, str]:
    """A grounded quote of the passage with the text around it; else the passage's opening words."""
    for c in codes:
        quote = c.get("quote")
        if quote and c.get("grounding") in ("exact", "normalised") and quote in text:
            at = text.find(quote)
            return text[max(0, at - around) : at], quote, text[at + len(quote) : at + len(quote) + around]
    return "", text[: 2 * around], ""


def write_page(themes: str | Path, excerpts: str | Path, methods: str | Path, path: str | Path) -> int:
    """Each theme: its name, size, stability, top codes, description, and three of its most central passages with
    a quote in context. Returns the themes listed."""
    t = tables.read(themes, "themes").to_pandas()
    wanted = {c for reps in t.representatives for c in list(reps)[:QUOTES]}
    ex = tables.read(excerpts, "excerpts", ["chunk_id", "doc_id", "text", "codes"]).to_pandas()
    ex = ex[ex.chunk_id.isin(wanted)].set_index("chunk_id")
    body = ["<h1>Themes</h1>", f"<p>{html.escape(Path(methods).read_text(encoding='utf-8').strip())}</p>"]
    for row in t.itertuples():
        stability = "" if pd.isna(row.stability) else f", kept together in {row.stability:.0%} of the repeats"
        body.append(f"<h2>{row.theme}. {html.escape(row.name)}</h2>")
        body.append(
            f"<p>{row.n_chunks:,} passages from {row.n_documents:,} documents ({row.share:.0%}){stability}. "
            f"Codes over-represented: {html.escape(', '.join(row.top_codes) or 'none')}.</p>"
        )
        if isinstance(row.description, str) and row.description:
            body.append(f"<p><em>{html.escape(row.description)}</em></p>")
        items = []
        for chunk_id in list(row.representatives)[:QUOTES]:
            if chunk_id not in ex.index:
                continue
            passage = ex.loc[chunk_id]
            before, quote, after = quotes_in_context(passage.text, list(passage.codes))
            items.append(
                f"<li>…{html.escape(before)}<strong>{html.escape(quote)}</strong>{html.escape(after)}… "
                f"<small>({html.escape(passage.doc_id)})</small></li>"
            )
        body.append("<ul>" + "".join(items) + "</ul>")
    pages.write(path, pages.page("Themes", "\n".join(body)))
    return len(t)
