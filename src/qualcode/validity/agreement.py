"""Agreement statistics for nominal codes, with seeded bootstrap intervals over units, all vectorised.

Pure numpy: no file, no qualcode import. One code is a matrix of ratings, units by raters, holding category numbers
0..K-1 and -1 where a rater did not rate the unit. Every statistic here is a function of sums over units of
per-unit quantities (a pair's joint table, the per-unit category counts), so a bootstrap resample is a weighted sum:
the resamples' unit counts (B x units) times the per-unit quantities (units x q) in one matrix product, and each
statistic is computed for all resamples at once. Row 0 of the weights is all ones: the estimate itself.

Missing ratings follow Gwet (2014) and Krippendorff (2011): a pair is compared on the units both rated (pairwise
deletion); among all raters, observed agreement, Fleiss' kappa and Gwet's AC1 use Gwet's generalisation to
missing ratings (agreement over units with 2+ ratings, category shares over units with 1+), Krippendorff's alpha
its coincidence matrix over pairable values. With complete data these are the textbook formulas.

The point estimate of alpha comes from the `krippendorff` package; this module's vectorised alpha (needed for the
resamples) is tested to agree with it, as the kappas are with scikit-learn and statsmodels.
"""

from __future__ import annotations

import itertools

import numpy as np

PAIR_METRICS = ("observed_agreement", "cohen_kappa", "krippendorff_alpha", "gwet_ac1")
GROUP_METRICS = ("observed_agreement", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1")
# model against the reference, for presence/absence codes (category 1 is "present")
RETRIEVAL_METRICS = ("precision", "recall", "f1")


def bootstrap_weights(n_units: int, resamples: int, seed: int) -> np.ndarray:
    """(1 + resamples) x n_units: how often each unit is drawn in each resample; row 0 is the sample itself.
    Seeded, so the same inputs give the same intervals, byte for byte."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(n_units, 1), size=(resamples, n_units))
    flat = draws + (np.arange(resamples) * n_units)[:, None]
    counts = np.bincount(flat.ravel(), minlength=resamples * n_units).reshape(resamples, n_units)
    return np.vstack([np.ones((1, n_units)), counts]).astype(np.float64)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1), np.nan)


def _onehot(x: np.ndarray, k: int) -> np.ndarray:
    """units x k indicators of each category; a missing rating (-1) has none."""
    return (x[:, None] == np.arange(k)[None, :]).astype(np.float64)


def joint_tables(a: np.ndarray, b: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    """(resamples, k, k) tables of rater a's category (rows) against b's, over units both rated."""
    both = (a >= 0) & (b >= 0)
    cell = np.where(both, a * k + b, -1)
    return (weights @ _onehot(cell, k * k)).reshape(-1, k, k)


def pair_statistics(tables: np.ndarray) -> dict[str, np.ndarray]:
    """Observed agreement, Cohen's kappa, Krippendorff's alpha and Gwet's AC1 from joint tables (..., k, k)."""
    k = tables.shape[-1]
    n = tables.sum(axis=(-2, -1))
    po = _div(np.trace(tables, axis1=-2, axis2=-1), n)
    pa, pb = _div(tables.sum(-1), n[..., None]), _div(tables.sum(-2), n[..., None])
    pe_cohen = (pa * pb).sum(-1)
    pi = (pa + pb) / 2
    pe_gwet = (pi * (1 - pi)).sum(-1) / (k - 1)
    coincidence = tables + np.swapaxes(tables, -2, -1)
    return {
        "n_units": n,
        "observed_agreement": po,
        "cohen_kappa": _div(po - pe_cohen, 1 - pe_cohen),
        "krippendorff_alpha": _alpha(coincidence),
        "gwet_ac1": _div(po - pe_gwet, 1 - pe_gwet),
    }


def _alpha(coincidence: np.ndarray) -> np.ndarray:
    """Krippendorff's alpha (nominal) from coincidence matrices (..., k, k): 1 - D_o / D_e."""
    n_k = coincidence.sum(-1)
    total = n_k.sum(-1)
    disagree = total - np.trace(coincidence, axis1=-2, axis2=-1)
    expected = total**2 - (n_k**2).sum(-1)
    return 1 - _div((total - 1) * disagree, expected)


def group_statistics(ratings: np.ndarray, k: int, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Among all raters (columns of `ratings`, units x raters, -1 missing): observed agreement, Fleiss' kappa,
    Krippendorff's alpha and Gwet's AC1, each of shape (resamples,)."""
    counts = np.zeros((ratings.shape[0], k))
    for r in range(ratings.shape[1]):
        counts += _onehot(ratings[:, r], k)
    m = counts.sum(1)
    two = m >= 2
    safe = np.where(two, m, 2.0)
    # per unit: Gwet's agreement term, category shares, and the coincidences (c_k c_l - [k=l] c_k) / (m - 1)
    agree = np.where(two, (counts * (counts - 1)).sum(1) / (safe * (safe - 1)), 0.0)
    shares = _div(counts, m[:, None])
    shares = np.where(m[:, None] >= 1, shares, 0.0)
    coinc = (counts[:, :, None] * counts[:, None, :] - np.eye(k)[None] * counts[:, :, None]) / (safe - 1)[:, None, None]
    coinc = np.where(two[:, None, None], coinc, 0.0)
    per_unit = np.column_stack([two, m >= 1, agree, shares, coinc.reshape(len(m), k * k)])
    s = weights @ per_unit
    n2, n1, agree_sum, share_sum, o = s[:, 0], s[:, 1], s[:, 2], s[:, 3 : 3 + k], s[:, 3 + k :].reshape(-1, k, k)
    pa = _div(agree_sum, n2)
    pi = _div(share_sum, n1[:, None])
    pe_fleiss = (pi**2).sum(1)
    pe_gwet = (pi * (1 - pi)).sum(1) / (k - 1)
    return {
        "n_units": n2,
        "observed_agreement": pa,
        "fleiss_kappa": _div(pa - pe_fleiss, 1 - pe_fleiss),
        "krippendorff_alpha": _alpha(o),
        "gwet_ac1": _div(pa - pe_gwet, 1 - pe_gwet),
    }


def prevalence(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of a rater's rated units in category 1 (present), and the units rated, per resample."""
    s = weights @ np.column_stack([x >= 0, x == 1]).astype(np.float64)
    return _div(s[:, 1], s[:, 0]), s[:, 0]


def retrieval_statistics(tables: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of rater a (rows) against the reference b (columns), category 1 positive."""
    tp, fp, fn = tables[:, 1, 1], tables[:, 1, 0], tables[:, 0, 1]
    return {
        "precision": _div(tp, tp + fp),
        "recall": _div(tp, tp + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
    }


def majority(ratings: np.ndarray, k: int) -> np.ndarray:
    """The category most raters gave each unit; -1 where none rated it or the top categories tie."""
    counts = np.zeros((ratings.shape[0], k), dtype=np.int64)
    for r in range(ratings.shape[1]):
        counts += _onehot(ratings[:, r], k).astype(np.int64)
    top = counts.max(1)
    winners = (counts == top[:, None]).sum(1)
    return np.where((top > 0) & (winners == 1), counts.argmax(1), -1)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval over the resamples (row 0, the estimate, excluded); resamples where the statistic is
    undefined (no variation) are left out, and with none defined there is no interval."""
    boot = values[1:]
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return float(low), float(high)


def krippendorff_alpha(ratings: np.ndarray, k: int) -> float:
    """The point estimate from the `krippendorff` package (units x raters, -1 missing); NaN when undefined."""
    import krippendorff

    counts = np.zeros((ratings.shape[0], k))
    for r in range(ratings.shape[1]):
        counts += _onehot(ratings[:, r], k)
    counts = counts[counts.sum(1) >= 2]
    # the package raises on data with one value only; alpha is undefined there (no variation to agree on)
    if counts.shape[0] == 0 or (counts.sum(0) > 0).sum() < 2:
        return float("nan")
    return float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))


# -- every statistic of every code, as rows -------------------------------------------------------------------

# Krippendorff's (2004) reading of chance-corrected coefficients: data below .667 are not to be relied on, between
# .667 and .800 they allow tentative conclusions only.
ASSESSED = {"cohen_kappa", "fleiss_kappa", "krippendorff_alpha", "gwet_ac1"}


def assessment(metric: str, estimate: float | None) -> str | None:
    if metric not in ASSESSED or estimate is None or not np.isfinite(estimate):
        return None
    return "good" if estimate >= 0.8 else "tentative" if estimate >= 0.667 else "poor"


class Code:
    """One thing raters decide per unit: a field as a whole (`value` None; its categories are the field's values)
    or the presence of one value (categories absent, present)."""

    def __init__(self, field: str, value: str | None, categories: tuple[str, ...], ratings: np.ndarray):
        self.field, self.value, self.categories, self.ratings = field, value, categories, ratings


def _row(code: Code, a: str, b: str | None, metric: str, values: np.ndarray, n: float) -> dict:
    est = float(values[0]) if np.isfinite(values[0]) else None
    low, high = interval(values) if est is not None else (None, None)
    return {
        "field": code.field, "value": code.value, "rater_a": a, "rater_b": b, "metric": metric,
        "estimate": est, "ci_low": low, "ci_high": high, "n_units": int(n), "assessment": assessment(metric, est),
    }  # fmt: skip


def evaluate(
    codes: list[Code], raters: list[str], models: list[str], reference: str, weights: np.ndarray
) -> tuple[list[dict], list[dict]]:
    """Agreement rows (every pair of raters, all raters together when 3 or more, each rater's prevalence, each
    model against the reference, and with a majority reference what it rested on: its prevalence, the share of
    units only one coder coded and the share tied) and confusion rows (each model against the reference, for whole
    fields).

    `reference` is a human rater's name, or "majority": the human raters' majority, ties left out."""
    humans = [i for i, r in enumerate(raters) if r not in models]
    rows: list[dict] = []
    confusion: list[dict] = []
    for code in codes:
        k, x = len(code.categories), code.ratings
        if code.value is not None:  # presence of one value: how often each rater sees it
            for i, r in enumerate(raters):
                share, n = prevalence(x[:, i], weights)
                rows.append(_row(code, r, None, "prevalence", share, n[0]))
        ref = majority(x[:, humans], k) if reference == "majority" else x[:, raters.index(reference)]
        if reference == "majority" and len(humans) >= 2:
            # what the majority rests on when coders coded different units: its prevalence, the units only one
            # coder coded (there the majority is that coder), and those left out as ties
            coders = (x[:, humans] >= 0).sum(1)
            some = (coders >= 1).astype(np.float64)
            if code.value is not None:
                share, n = prevalence(ref, weights)
                rows.append(_row(code, "majority", None, "prevalence", share, n[0]))
            for metric, units in (("majority_one_coder", coders == 1), ("majority_tied", (coders >= 2) & (ref < 0))):
                rows.append(_row(code, "majority", None, metric, _div(weights @ units.astype(np.float64),
                                                                      weights @ some), some.sum()))  # fmt: skip
        pairs = []
        for i, j in itertools.combinations(range(len(raters)), 2):
            if raters[j] in models and raters[i] not in models:
                i, j = j, i  # a model is rater_a beside a human: tables read model against human alike
            pairs.append((raters[i], raters[j], x[:, i], x[:, j]))
        if reference == "majority" and len(humans) >= 2:
            pairs += [(m, "majority", x[:, raters.index(m)], ref) for m in models]
        for a, b, xa, xb in pairs:
            tables = joint_tables(xa, xb, k, weights)
            stats = pair_statistics(tables)
            n = stats.pop("n_units")[0]
            stats["krippendorff_alpha"][0] = krippendorff_alpha(np.column_stack([xa, xb]), k)
            if a in models and b == reference:
                if code.value is not None:
                    stats.update(retrieval_statistics(tables))
                else:
                    confusion += [
                        {"field": code.field, "rater": a, "reference": b, "reference_value": code.categories[j],
                         "rater_value": code.categories[i], "n_units": int(tables[0, i, j])}
                        for j in range(k) for i in range(k)
                    ]  # fmt: skip
            rows += [_row(code, a, b, metric, v, n) for metric, v in stats.items()]
        for name, cols in (("all", list(range(len(raters)))), ("humans", humans)):
            if len(cols) < 3 or (name == "humans" and len(humans) == len(raters)):
                continue
            stats = group_statistics(x[:, cols], k, weights)
            stats["krippendorff_alpha"][0] = krippendorff_alpha(x[:, cols], k)
            n = stats.pop("n_units")[0]
            rows += [_row(code, name, None, metric, v, n) for metric, v in stats.items()]
    return rows, confusion
