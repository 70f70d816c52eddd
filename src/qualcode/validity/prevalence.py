"""Prevalence of each code over the whole corpus: from the model's codes (naive) and corrected with the human-coded
probability sample, with a 95% interval, overall and by a grouping column.

The corrected estimate is the design-based difference estimator of design-based supervised learning (Egami et al.
2023) and prediction-powered inference (Angelopoulos et al. 2023) for a finite corpus: the model codes every unit,
humans code a probability sample S drawn with known inclusion probabilities pi_i (`validation.sample`), and

    theta = ( sum over the N units of yhat_i  +  sum over i in S of (y_i - yhat_i) / pi_i ) / N

where yhat_i is the model's code (1 present, 0 absent or not coded) and y_i the humans'. Whatever the model's
errors, theta is unbiased over the sample's draws (the Horvitz-Thompson total of the errors corrects the naive
total); the model's accuracy only sets its variance. The variance is the stratified one (strata as recorded in the
sample, without replacement within a stratum, f_h its sampling fraction):

    Var(total) = sum over strata h of (1 - f_h) n_h / (n_h - 1) sum over i in S_h of (z_i - mean_h z)^2,
    z_i = (y_i - yhat_i) / pi_i

which is the textbook N_h^2 (1 - f_h) s_h^2 / n_h when pi is the same within a stratum. A group (a value of
`validation.by`) is a domain: z is zero outside it and N is the group's size. The interval is the normal one,
theta +- 1.96 SE, clipped to [0, 1]. theta itself is not clipped (it stays unbiased): in a small group it
can fall outside [0, 1], and the row's note says so.

Humans' y_i: the reference coder's code (`validation.reference`), or with `majority` the coders' majority, a tie
counting one half. Without a probability sample (no `validation.sample`, human-coded units outside it, sampled
units nobody coded) no corrected estimate is given, and the table says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import ConfigError
from ..inputs.codebook import Codebook
from ..outputs import tables
from . import gold, sampling, validation

Z95 = 1.959963984540054
METHOD = "difference estimator with Horvitz-Thompson weights (design-based; Egami et al. 2023)"
RARE = 5  # fewer human positives (or disagreements with the model) than this in the sample: a fragile interval


@dataclass(frozen=True)
class Estimate:
    naive: float | None
    corrected: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    n_units: int
    n_sample: int
    positives: int  # sampled units in the domain the humans coded present (a tie counts if >= 1/2)
    disagreements: int  # sampled units in the domain where the humans and the model differ
    note: str | None


def estimate(
    predicted: np.ndarray,
    truth: np.ndarray,
    pi: np.ndarray,
    stratum: np.ndarray,
    domain: np.ndarray | None = None,
) -> Estimate:
    """The naive and corrected prevalence over `domain` (default: every unit). Arrays over the N units of the
    corpus: `predicted` the model's 0/1; `truth` the humans' value in [0, 1] for sampled units, NaN elsewhere; `pi`
    the inclusion probability of sampled units (NaN elsewhere); `stratum` each sampled unit's stratum (any
    hashable; ignored elsewhere)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    pi = np.asarray(pi, dtype=np.float64)
    stratum = np.asarray(stratum, dtype=object)
    domain = np.ones(len(predicted), dtype=bool) if domain is None else np.asarray(domain, dtype=bool)
    sampled = ~np.isnan(truth)
    n_units, n_sample = int(domain.sum()), int((sampled & domain).sum())
    in_domain = sampled & domain
    positives = int((truth[in_domain] >= 0.5).sum())
    disagreements = int((truth[in_domain] != predicted[in_domain]).sum())
    if n_units == 0:
        return Estimate(None, None, None, None, None, 0, 0, 0, 0, "no unit in this group")
    naive = float(predicted[domain].mean())
    if n_sample == 0:  # the estimate would be the naive one with a variance of zero: false certainty
        return Estimate(naive, None, None, None, None, n_units, 0, 0, 0,
                        "no sampled unit in this group: nothing to correct the model's codes with")  # fmt: skip
    z = np.where(in_domain, (np.nan_to_num(truth) - predicted) / np.where(sampled, pi, 1.0), 0.0)
    total = float(predicted[domain].sum() + z[sampled].sum())
    variance = 0.0
    for h in pd.unique(stratum[sampled]):
        at = sampled & (stratum == h)
        n_h = int(at.sum())
        if n_h < 2:
            if np.all(pi[at] >= 1):  # a unit certain to be drawn adds no variance
                continue
            return Estimate(naive, total / n_units, None, None, None, n_units, n_sample, positives, disagreements,
                            f"stratum {h!r} holds one sampled unit: no variance, no interval")  # fmt: skip
        zh = z[at]
        variance += (1 - float(pi[at].mean())) * n_h / (n_h - 1) * float(((zh - zh.mean()) ** 2).sum())
    theta = total / n_units
    se = float(np.sqrt(max(variance, 0.0))) / n_units
    note = None
    if min(positives, disagreements) < RARE:
        note = (f"fragile: {positives} human positive(s) and {disagreements} disagreement(s) with the model among "
                f"{n_sample} sampled units (fewer than {RARE}); the normal interval may undercover")  # fmt: skip
    if not 0 <= theta <= 1:
        note = (f"the corrected estimate {theta:.3f} is outside [0, 1]: too few sampled units here "
                f"({n_sample}) to correct the model's {naive:.3f} reliably")  # fmt: skip
    low, high = (min(1.0, max(0.0, x)) for x in (theta - Z95 * se, theta + Z95 * se))
    return Estimate(naive, theta, se, low, high, n_units, n_sample, positives, disagreements, note)


def human_truth(presence: Mapping[str, np.ndarray], rated: Mapping[str, np.ndarray], reference: str) -> np.ndarray:
    """units x columns: the reference coder's codes, or the coders' majority with a tie counting one half (a unit
    the reference did not code: NaN)."""
    coders = list(presence)
    if reference != "majority":
        return np.where(rated[reference][:, None], presence[reference], np.nan).astype(np.float64)
    given = sum(np.where(rated[c][:, None], presence[c], 0).astype(np.float64) for c in coders)
    n = sum(rated[c].astype(np.float64) for c in coders)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = given / n
    return np.where(share > 0.5, 1.0, np.where(share < 0.5, 0.0, 0.5))


def _refusal(
    sample: pd.DataFrame | None, sample_path: str | None, human_units: Sequence[str], units: set[str]
) -> str | None:
    """Why the human-coded units are not a probability sample, or None."""
    if sample_path is None:
        return ("no validation.sample: the human-coded units were not drawn as a probability sample (with recorded "
                "inclusion probabilities), so no corrected estimate or interval can be given")  # fmt: skip
    if not human_units:
        return "no human codings (validation.gold) of the sampled units"
    assert sample is not None
    drawn = set(sample["unit"])
    unknown = sorted(drawn - units)
    if unknown:
        return (f"{len(unknown)} sampled unit(s) of {sample_path} are not units of this corpus (e.g. {unknown[0]!r}): "
                "the sample was drawn from another corpus or unit")  # fmt: skip
    outside = sorted(set(human_units) - drawn)
    if outside:
        return (f"{len(outside)} human-coded unit(s) are not in the sample {sample_path} (e.g. {outside[0]!r}): the "
                "coders chose units outside the drawn sample, so it is not a probability sample")  # fmt: skip
    uncoded = sorted(drawn - set(human_units))
    if uncoded:
        return (f"{len(uncoded)} of the {len(drawn)} sampled units have no human coding (e.g. {uncoded[0]!r}): code "
                "them all; a sample with units left out is no longer a probability sample")  # fmt: skip
    return None


def _codes(cb: Codebook) -> list[tuple[str, str]]:
    """The codes whose prevalence is estimated: each value of a choice field, a boolean's true."""
    boolean = {f.name for f in cb.fields if f.type == "boolean"}
    return [(f, v) for f, v in validation._columns(cb) if not (f in boolean and v == "false")]


def prevalence_table(
    *,
    cb: Codebook,
    units: Sequence[str],
    predicted: np.ndarray,
    human_units: Sequence[str],
    human: np.ndarray,
    settings: Mapping[str, Any],
    sample: pd.DataFrame | None,
    groups: Sequence[Any] | None = None,
) -> pa.Table:
    """The prevalence table. `units` every unit of the corpus (doc_id or chunk_id), `unit_doc` its document,
    `predicted` units x `validation._columns(cb)` the model's presence; `human_units` and `human` (units x columns,
    see `human_truth`) the human-coded units; `groups` each unit's value of `settings["by"]`."""
    columns = validation._columns(cb)
    index = {u: i for i, u in enumerate(units)}
    refused = _refusal(sample, settings.get("sample"), list(human_units), set(index))
    n = len(units)
    truth = np.full((n, len(columns)), np.nan)
    pi = np.full(n, np.nan)
    stratum = np.full(n, None, dtype=object)
    if refused is None:
        assert sample is not None
        at = np.array([index[u] for u in human_units], dtype=np.int64)
        truth[at] = human
        rows = sample["unit"].map(index).to_numpy(dtype=np.int64)
        pi[rows] = sample["inclusion_probability"].to_numpy()
        stratum[rows] = sample["stratum"].to_numpy()
        undecided = np.isnan(truth[rows]).any(axis=1)
        if undecided.any():  # the named reference coder did not code every sampled unit
            refused = (f"{int(undecided.sum())} sampled unit(s) have no code by the reference "
                       f"({settings['reference']}), e.g. {units[rows[undecided][0]]!r}: code them all")  # fmt: skip
            truth[:] = np.nan
    domains: list[tuple[str | None, str | None, np.ndarray]] = [(None, None, np.ones(n, dtype=bool))]
    by = settings.get("by")
    if by and groups is not None:
        values = pd.Series(list(groups), dtype="string").fillna("(missing)").to_numpy()
        domains += [(by, str(g), values == g) for g in sorted(set(values))]
    rows_out = []
    unit_name = settings["unit"]
    for field, value in _codes(cb):
        c = columns.index((field, value))
        for by_col, group, domain in domains:
            e = estimate(predicted[:, c], truth[:, c], pi, stratum, domain)
            row = {
                "field": field, "value": value, "by": by_col, "group": group, "unit": unit_name,
                "n_units": e.n_units, "naive": e.naive, "n_sample": e.n_sample, "human_positives": e.positives,
                "disagreements": e.disagreements, "corrected": e.corrected, "se": e.se, "ci_low": e.ci_low,
                "ci_high": e.ci_high, "method": METHOD, "refused": None, "note": e.note,
            }  # fmt: skip
            if refused is not None:
                row.update(n_sample=0, human_positives=0, disagreements=0, corrected=None, se=None, ci_low=None,
                           ci_high=None, method=None, refused=refused, note=None)  # fmt: skip
            rows_out.append(row)
    return pa.Table.from_pylist(rows_out, schema=tables.PREVALENCE)


def model_presence(
    cb: Codebook, units: Sequence[str], unit: str, codes: pd.DataFrame, coded_chunks: pd.Series
) -> np.ndarray:
    """units x columns: what the model gave each unit (a document: in any of its chunks); a chunk it failed to
    code counts as absent (the correction accounts for it like any other error). `codes`: doc_id, chunk_id,
    field, value (codes.parquet)."""
    index = pd.Series(np.arange(len(units)), index=list(units))
    codes = codes[codes["chunk_id"].isin(set(coded_chunks))]
    key = codes["doc_id"] if unit == "document" else codes["chunk_id"]
    rows = codes.assign(unit=key.map(index)).dropna(subset=["unit"]).astype({"unit": np.int64})
    return validation._presence(rows, len(units), validation._columns(cb))


def write_prevalence(
    *,
    cb: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codings: str | Path,
    codes: str | Path,
    gold_files: Sequence[str | Path],
    settings: Mapping[str, Any],
    out: str | Path,
    metadata: Mapping[str, str] | None = None,
    pilot: bool = False,
) -> tuple[int, str | None]:
    """Read the corpus, the model's codes, the human codings and the sample; write prevalence.parquet. Returns its
    row count and the refusal's reason (None when corrected estimates were given)."""
    by = settings.get("by")
    doc_columns = tables.read(documents, "documents").schema.names
    if by and by not in doc_columns:
        meta = [c for c in doc_columns if c.startswith("meta_")]
        raise ConfigError(f"validation.by: {by!r} is not a column of documents.parquet; the grouping columns are "
                          f"{', '.join(meta) or 'none (no document has metadata)'}")  # fmt: skip
    docs = tables.read(documents, "documents", ["doc_id", "text", *([by] if by else [])]).to_pandas()
    texts = dict(zip(docs["doc_id"], docs["text"], strict=True))
    unit = settings["unit"]
    chunk_table = tables.read(chunks, "chunks", ["chunk_id", "doc_id", "start", "end"]).to_pandas()
    status = tables.read(codings, "codings", ["chunk_id", "status"]).to_pandas()
    coded = status.loc[status["status"] == "coded", "chunk_id"]
    model_codes = tables.read(codes, "codes", ["doc_id", "chunk_id", "field", "value"]).to_pandas()
    if unit == "document":
        units, unit_doc = docs["doc_id"].tolist(), docs["doc_id"].tolist()
    else:
        units, unit_doc = chunk_table["chunk_id"].tolist(), chunk_table["doc_id"].tolist()
    predicted = model_presence(cb, units, unit, model_codes, coded)
    human, _ = gold.load(gold_files, cb, texts, unit=unit, on_error=settings["on_error"], sample=pilot)
    human_units: list[str] = []
    truth = np.zeros((0, len(validation._columns(cb))))
    if not human.empty:
        human_units, presence, rated = validation.ratings(cb, human, chunk_table, unit)
        truth = human_truth(presence, rated, validation.reference_used(list(presence), settings["reference"]))
    sample = sampling.read_sample(settings["sample"]) if settings.get("sample") else None
    groups = None
    if by:
        group_of_doc = dict(zip(docs["doc_id"], docs[by], strict=True))
        groups = [group_of_doc.get(d) for d in unit_doc]
    table = prevalence_table(cb=cb, units=units, predicted=predicted, human_units=human_units,
                             human=truth, settings=settings, sample=sample, groups=groups)  # fmt: skip
    stamp = {**(metadata or {}), "qualcode.prevalence": json.dumps(dict(settings), sort_keys=True, default=str)}
    tables.write(table, out, stamp)
    refused = table.column("refused")[0].as_py() if table.num_rows else None
    return table.num_rows, refused
