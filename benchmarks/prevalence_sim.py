"""Coverage of the corrected prevalence intervals (validity.prevalence) in simulated studies.

A corpus of N units in three occupations with known true codes (prevalences differing by occupation); a "model"
whose sensitivity and false-positive rate differ by occupation (so its errors bias the naive prevalence, differently
in each group); a human-coded sample of the truth drawn at random, stratified by occupation with unequal sampling
fractions (so the inclusion probabilities matter). Each study draws a new corpus, model and sample; the estimator is
the one the workflow runs (prevalence.estimate). Printed: the naive estimate's mean bias, and the corrected
estimate's bias and the share of its 95% intervals that cover the corpus's true prevalence, overall and by group.

    uv run python benchmarks/prevalence_sim.py [--studies 1000] [--units 6000] [--seed 1]
"""

from __future__ import annotations

import argparse

import numpy as np

from qualcode.validity import prevalence

GROUPS = ("nurse", "cook", "driver")
SHARE = np.array([0.5, 0.3, 0.2])  # of the corpus
TRUE_PREVALENCE = np.array([0.30, 0.15, 0.08])
SENSITIVITY = np.array([0.90, 0.70, 0.55])  # the model finds the code less often in some groups
FALSE_POSITIVE = np.array([0.03, 0.10, 0.15])  # and invents it more often in others
SAMPLED = np.array([150, 100, 100])  # human-coded units per group (stratum): unequal fractions


def study(rng: np.random.Generator, n: int) -> dict[str, tuple[float, float, float, float]]:
    group = rng.choice(len(GROUPS), size=n, p=SHARE)
    truth = rng.random(n) < TRUE_PREVALENCE[group]
    predicted = np.where(truth, rng.random(n) < SENSITIVITY[group], rng.random(n) < FALSE_POSITIVE[group]).astype(int)
    y = np.full(n, np.nan)
    pi = np.full(n, np.nan)
    stratum = np.full(n, None, dtype=object)
    for g in range(len(GROUPS)):
        members = np.flatnonzero(group == g)
        drawn = rng.choice(members, size=min(SAMPLED[g], len(members)), replace=False)
        y[drawn] = truth[drawn]
        pi[drawn] = len(drawn) / len(members)
        stratum[drawn] = GROUPS[g]
    out = {}
    for name, domain in [("overall", None)] + [(GROUPS[g], group == g) for g in range(len(GROUPS))]:
        e = prevalence.estimate(predicted, y, pi, stratum, domain)
        true = float(truth.mean() if domain is None else truth[domain].mean())
        covered = e.ci_low is not None and e.ci_low <= true <= e.ci_high
        out[name] = (e.naive - true, e.corrected - true, float(covered), e.ci_high - e.ci_low)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--units", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    runs = [study(rng, args.units) for _ in range(args.studies)]
    sizes = ", ".join(f"{g} {s}" for g, s in zip(GROUPS, SAMPLED, strict=True))
    truth = ", ".join(f"{g} {p:.2f}" for g, p in zip(GROUPS, TRUE_PREVALENCE, strict=True))
    print(f"{args.studies} simulated studies, {args.units} units, {SAMPLED.sum()} human-coded ({sizes}); "
          f"true prevalence {truth}")  # fmt: skip
    print(f"{'':10}{'naive bias':>12}{'corrected bias':>16}{'coverage 95%':>14}{'mean width':>12}")
    for name in ("overall", *GROUPS):
        a = np.array([r[name] for r in runs])
        naive, corrected, covered, width = a.mean(axis=0)
        print(f"{name:10}{naive:>+12.4f}{corrected:>+16.4f}{covered:>14.3f}{width:>12.3f}")
    print("coverage's Monte Carlo standard error at 95%: "
          f"{np.sqrt(0.95 * 0.05 / args.studies):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
