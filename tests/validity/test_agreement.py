"""Agreement statistics: published worked examples, independent implementations, and the bootstrap's behaviour."""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score, precision_score, recall_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from qualcode.validity import agreement

M = -1  # a missing rating
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers, 12 units, values 1-5,
# missing data; also Gwet (2014), Handbook of Inter-Rater Reliability, 4th ed., the 4 raters x 12 subjects example.
KRIPPENDORFF_2011 = np.array(
    [[1, 2, 3, 3, 2, 1, 4, 1, 2, M, M, M],
     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, M, 3],
     [M, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, M],
     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, M]]
).T  # fmt: skip
RATINGS_4 = np.where(KRIPPENDORFF_2011 > 0, KRIPPENDORFF_2011 - 1, M)  # categories 0..4
# Krippendorff (2011), section A: two observers, ten units, binary data; alpha = 0.095.
BINARY_A = np.array([0, 1, 0, 0, 0, 0, 0, 0, 1, 0])
BINARY_B = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])


def _none(n: int) -> np.ndarray:
    return agreement.bootstrap_weights(n, 0, seed=0)


def test_krippendorff_2011_published_values():
    group = agreement.group_statistics(RATINGS_4, 5, _none(12))
    assert round(float(group["krippendorff_alpha"][0]), 3) == 0.743  # nominal alpha, as published
    pair = agreement.pair_statistics(agreement.joint_tables(BINARY_A, BINARY_B, 2, _none(10)))
    assert round(float(pair["krippendorff_alpha"][0]), 3) == 0.095


def test_gwet_handbook_published_values():
    # Gwet (2014), 4 raters x 12 subjects with missing ratings: AC1 0.77544 (pa 0.81818, pe 0.19032),
    # Fleiss' kappa 0.76117 (pe 0.23872), as printed by his irrCAC package's documentation.
    group = agreement.group_statistics(RATINGS_4, 5, _none(12))
    assert round(float(group["gwet_ac1"][0]), 5) == 0.77544
    assert round(float(group["fleiss_kappa"][0]), 5) == 0.76117
    assert round(float(group["observed_agreement"][0]), 5) == 0.81818


def _gwet_by_hand(ratings: np.ndarray, k: int) -> tuple[float, float, float]:
    """Gwet's (2014) formulas with missing ratings, unit by unit in plain Python: (pa, AC1, Fleiss' kappa)."""
    rated = [[int(v) for v in row if v >= 0] for row in ratings]
    rated = [r for r in rated if r]
    many = [r for r in rated if len(r) >= 2]
    pa = sum(sum(r.count(c) * (r.count(c) - 1) for c in range(k)) / (len(r) * (len(r) - 1)) for r in many) / len(many)
    pi = [sum(r.count(c) / len(r) for r in rated) / len(rated) for c in range(k)]
    pe_ac1 = sum(p * (1 - p) for p in pi) / (k - 1)
    pe_fleiss = sum(p * p for p in pi)
    return pa, (pa - pe_ac1) / (1 - pe_ac1), (pa - pe_fleiss) / (1 - pe_fleiss)


def _random_ratings(seed: int, units: int, raters: int, k: int, missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, units)
    x = np.where(rng.random((units, raters)) < 0.7, truth[:, None], rng.integers(0, k, (units, raters)))
    x[rng.random((units, raters)) < missing] = M
    return x


@pytest.mark.parametrize("seed", range(5))
def test_group_statistics_match_independent_implementations(seed):
    k = 2 + seed % 3
    x = _random_ratings(seed, 60, 3 + seed % 2, k, missing=0.15)
    got = {name: float(v[0]) for name, v in agreement.group_statistics(x, k, _none(len(x))).items()}
    pa, ac1, fleiss = _gwet_by_hand(x, k)
    assert got["observed_agreement"] == pytest.approx(pa, abs=1e-9)
    assert got["gwet_ac1"] == pytest.approx(ac1, abs=1e-9)
    assert got["fleiss_kappa"] == pytest.approx(fleiss, abs=1e-9)
    data = np.where(x >= 0, x, np.nan).T
    assert got["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(data, level_of_measurement="nominal"), abs=1e-9
    )
    assert agreement.krippendorff_alpha(x, k) == pytest.approx(got["krippendorff_alpha"], abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_matches_statsmodels_on_complete_data(seed):
    k = 2 + seed % 3
    x = _random_ratings(seed, 50, 3 + seed, k, missing=0)
    got = agreement.group_statistics(x, k, _none(len(x)))["fleiss_kappa"][0]
    table, _ = aggregate_raters(x, n_cat=k)
    assert got == pytest.approx(fleiss_kappa(table, method="fleiss"), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_pair_statistics_match_scikit_learn_and_krippendorff(seed):
    k = 2 + seed % 3
    x = _random_ratings(seed, 80, 2, k, missing=0.1)
    a, b = x[:, 0], x[:, 1]
    stats = agreement.pair_statistics(agreement.joint_tables(a, b, k, _none(len(x))))
    both = (a >= 0) & (b >= 0)
    assert stats["n_units"][0] == both.sum()
    assert stats["observed_agreement"][0] == pytest.approx(np.mean(a[both] == b[both]), abs=1e-9)
    assert stats["cohen_kappa"][0] == pytest.approx(cohen_kappa_score(a[both], b[both]), abs=1e-9)
    data = np.where(both, x.T, np.nan)  # pairwise deletion: units both rated
    assert stats["krippendorff_alpha"][0] == pytest.approx(krippendorff.alpha(data, level_of_measurement="nominal"),
                                                            abs=1e-9)  # fmt: skip
    # Gwet's AC1 for two raters with complete data is his multi-rater formula on the same units
    _, ac1, _ = _gwet_by_hand(x[both], k)
    assert stats["gwet_ac1"][0] == pytest.approx(ac1, abs=1e-9)


def test_retrieval_and_confusion_match_scikit_learn():
    x = _random_ratings(7, 200, 2, 2, missing=0)
    model, ref = x[:, 0], x[:, 1]
    tables = agreement.joint_tables(model, ref, 2, _none(len(x)))
    got = {k: float(v[0]) for k, v in agreement.retrieval_statistics(tables).items()}
    assert got["precision"] == pytest.approx(precision_score(ref, model), abs=1e-9)
    assert got["recall"] == pytest.approx(recall_score(ref, model), abs=1e-9)
    assert got["f1"] == pytest.approx(f1_score(ref, model), abs=1e-9)
    # the joint table, transposed, is scikit-learn's confusion matrix (rows: reference)
    assert (confusion_matrix(ref, model) == tables[0].T).all()


def test_bootstrap_resamples_are_the_statistic_on_resampled_units():
    x = _random_ratings(3, 40, 3, 3, missing=0.1)
    weights = agreement.bootstrap_weights(len(x), 5, seed=11)
    got = agreement.group_statistics(x, 3, weights)["krippendorff_alpha"]
    for b in range(1, 6):
        drawn = np.repeat(np.arange(len(x)), weights[b].astype(int))
        assert got[b] == pytest.approx(
            agreement.group_statistics(x[drawn], 3, _none(len(drawn)))["krippendorff_alpha"][0]
        )


def test_intervals_are_seeded_and_cover_the_estimate():
    x = _random_ratings(5, 300, 2, 2, missing=0)
    runs = []
    for seed in (1, 1, 2):
        w = agreement.bootstrap_weights(len(x), 400, seed)
        runs.append(agreement.pair_statistics(agreement.joint_tables(x[:, 0], x[:, 1], 2, w))["cohen_kappa"])
    assert agreement.interval(runs[0]) == agreement.interval(runs[1])
    assert agreement.interval(runs[0]) != agreement.interval(runs[2])
    low, high = agreement.interval(runs[0])
    assert low < runs[0][0] < high


def test_majority_leaves_ties_out():
    x = np.array([[1, 1, 0], [1, 0, M], [M, M, M], [0, 0, 1], [2, M, M]])
    assert agreement.majority(x, 3).tolist() == [1, M, M, 0, 2]


def test_evaluate_reports_every_pair_the_group_and_poor_agreement():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 120)
    humans = np.column_stack([truth, truth])
    humans[:10, 1] = 1 - humans[:10, 1]  # the humans agree on 110 of 120 units
    model = rng.integers(0, 2, 120)  # the model guesses
    x = np.column_stack([humans, model])
    code = agreement.Code("emotions", "fear", ("absent", "present"), x)
    rows, confusion = agreement.evaluate([code], ["ann", "ben", "model"], ["model"], "majority",
                                         agreement.bootstrap_weights(120, 200, 1))  # fmt: skip
    pairs = {(r["rater_a"], r["rater_b"]) for r in rows if r["metric"] == "cohen_kappa"}
    assert pairs == {("ann", "ben"), ("model", "ann"), ("model", "ben"), ("model", "majority")}
    by = {(r["rater_a"], r["rater_b"], r["metric"]): r for r in rows}
    assert by["ann", "ben", "cohen_kappa"]["assessment"] == "good"
    assert by["model", "ann", "cohen_kappa"]["assessment"] == "poor"
    assert by["all", None, "fleiss_kappa"]["n_units"] == 120
    assert by["model", "majority", "f1"]["n_units"] == 110  # the humans' ties are left out
    assert by["ann", None, "prevalence"]["estimate"] == pytest.approx(truth.mean())
    assert not confusion  # confusion tables are for whole fields, not presence codes
    field = agreement.Code("solidarity", None, ("present", "not_mentioned"), x)
    _, confusion = agreement.evaluate([field], ["ann", "ben", "model"], ["model"], "ann", _none(120))
    cells = {(c["reference_value"], c["rater_value"]): c["n_units"] for c in confusion}
    assert sum(cells.values()) == 120
    assert cells["not_mentioned", "not_mentioned"] == int(((x[:, 0] == 1) & (x[:, 2] == 1)).sum())


def test_statistics_without_variation_are_undefined_not_errors():
    x = np.zeros((20, 3), dtype=int)
    rows, _ = agreement.evaluate([agreement.Code("f", "v", ("absent", "present"), x)], ["a", "b", "c"], [], "majority",
                                 agreement.bootstrap_weights(20, 50, 1))  # fmt: skip
    by = {(r["rater_a"], r["rater_b"], r["metric"]): r for r in rows}
    assert by["a", "b", "observed_agreement"]["estimate"] == 1.0
    assert by["a", "b", "cohen_kappa"]["estimate"] is None
    assert by["all", None, "krippendorff_alpha"]["estimate"] is None


def test_all_pairs_of_many_raters():
    x = _random_ratings(1, 30, 5, 2, missing=0.2)
    names = [f"r{i}" for i in range(5)]
    rows, _ = agreement.evaluate([agreement.Code("f", None, ("a", "b"), x)], names, [], "majority", _none(30))
    pairs = {(r["rater_a"], r["rater_b"]) for r in rows if r["rater_b"]}
    assert pairs == set(itertools.combinations(names, 2))
