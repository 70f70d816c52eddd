"""The codebook's history: agreement per code per codebook version, accumulated across runs.

Each run adds its agreement rows (pairs of raters, not groups or prevalences) under its codebook's name, version
and hash; a rerun with the same codebook replaces its own rows, a run with another codebook adds a revision. The
store lives outside `results/` (`validation.history`), since every run rewrites results/; the run's copy of the
whole history is results/agreement_history.parquet.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from ..ids import file_sha256
from ..inputs.codebook import Codebook
from ..outputs import tables

KEY = ["codebook_sha256", "field", "value", "rater_a", "rater_b", "metric"]
HEADLINE = "cohen_kappa"  # the coefficient the methods text follows across revisions


def revision_rows(agreement: pd.DataFrame, cb: Codebook, sha256: str, when: str) -> pd.DataFrame:
    """This run's rows of the history: its agreement between pairs of raters on the development units (all units
    without a holdout; the sealed holdout is scored once, on the final codebook, never in the revisions), stamped
    with the codebook."""
    pairs = agreement[agreement["rater_b"].notna() & (agreement["split"] != "holdout")]
    return pairs.assign(codebook_name=cb.name, codebook_version=cb.version, codebook_sha256=sha256,
                        recorded_at=when)  # fmt: skip


def accumulate(previous: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame:
    """The history with this run's rows: the rows of the same codebook replaced, revisions numbered in the order
    their codebooks were first recorded."""
    if previous is None or previous.empty:
        merged = rows.assign(first=rows["recorded_at"])
    else:
        first = previous.groupby("codebook_sha256")["recorded_at"].min()
        kept = previous[~previous["codebook_sha256"].isin(rows["codebook_sha256"])]
        merged = pd.concat([kept, rows], ignore_index=True)
        merged["first"] = merged["codebook_sha256"].map(first).fillna(merged["recorded_at"])
    order = merged.groupby("codebook_sha256")["first"].min().sort_values(kind="stable")
    merged["revision"] = merged["codebook_sha256"].map({h: i + 1 for i, h in enumerate(order.index)})
    merged = merged.drop(columns="first").sort_values(["revision", "field", "value", "rater_a", "rater_b", "metric"],
                                                      na_position="first", kind="stable")  # fmt: skip
    return merged[list(tables.AGREEMENT_HISTORY.names)].reset_index(drop=True)


def update(
    *, agreement: str | Path, codebook: Codebook, codebook_path: str | Path, store: str | Path, out: str | Path,
    metadata: Mapping[str, str] | None = None, now: str | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Add this run's agreement to the history kept at `store` (created if missing) and write the whole history to
    `out`. Returns it."""
    when = now or datetime.now(UTC).isoformat(timespec="seconds")
    rows = revision_rows(tables.read(agreement, "agreement").to_pandas(), codebook, file_sha256(codebook_path), when)
    store = Path(store)
    previous = tables.read(store, "agreement_history").to_pandas() if store.is_file() else None
    history = accumulate(previous, rows)
    table = pa.Table.from_pandas(history, schema=tables.AGREEMENT_HISTORY, preserve_index=False)
    store.parent.mkdir(parents=True, exist_ok=True)
    tables.write(table, store, dict(metadata or {}))
    tables.write(table, out, dict(metadata or {}))
    return history


def revisions_text(history: pd.DataFrame, reference: str = "majority", rater: str = "model") -> str | None:
    """For the methods: how often the codebook was revised, on how many units, and how the headline coefficient of
    the model against the reference moved per code from the first revision to the last. None without history."""
    rows = history[(history["rater_a"] == rater) & (history["rater_b"] == reference)
                   & (history["metric"] == HEADLINE)]  # fmt: skip
    if rows.empty:
        return None
    revisions = rows.groupby("revision").agg(version=("codebook_version", "first"), n=("n_units", "max"))
    first, last = revisions.index.min(), revisions.index.max()
    versions = ", ".join(f"{r.version} (n = {r.n})" for r in revisions.itertuples())
    if first == last:
        return (f"Agreement was recorded for one version of the codebook, {versions}; it has not been revised "
                f"since.")  # fmt: skip
    moved = []
    a = rows[rows["revision"] == first].set_index(["field", "value"])
    b = rows[rows["revision"] == last].set_index(["field", "value"])
    for key in a.index.intersection(b.index):
        x, y = a.at[key, "estimate"], b.at[key, "estimate"]
        if pd.notna(x) and pd.notna(y):
            name = key[0] if pd.isna(key[1]) else f"{key[0]}: {key[1]}"
            moved.append(f"{name} from {x:.2f} (n = {a.at[key, 'n_units']}) to {y:.2f} (n = {b.at[key, 'n_units']})")
    where = "the development units (the holdout left out)" if (rows["split"] == "dev").any() else "these units"
    text = (f"The codebook was revised {last - first} time{'s' if last - first != 1 else ''} on {where} "
            f"(versions {versions})")  # fmt: skip
    if moved:
        text += f"; Cohen's kappa of the model against the {reference} went, per code, " + "; ".join(moved)
    return text + "."
