"""Speed of the agreement statistics (issue 10's target): 10,000 units x 40 codes x 3 raters (two humans and a
model), 1,000 bootstrap resamples, every pair, all raters together, prevalences and the model against the human
majority, each with its interval. Target: under 60 s on 2 cores.

    python benchmarks/agreement_speed.py [--units 10000] [--codes 40] [--resamples 1000]
"""

import argparse
import time

import numpy as np

from qualcode.validity import agreement

parser = argparse.ArgumentParser()
parser.add_argument("--units", type=int, default=10_000)
parser.add_argument("--codes", type=int, default=40)
parser.add_argument("--resamples", type=int, default=1_000)
args = parser.parse_args()

rng = np.random.default_rng(0)
raters = ["coder_a", "coder_b", "model"]
codes = []
for c in range(args.codes):
    truth = rng.random(args.units) < rng.uniform(0.05, 0.5)
    flips = rng.random((args.units, len(raters))) < 0.15  # each rater errs on 15% of units
    ratings = np.where(flips, ~truth[:, None], truth[:, None]).astype(np.int64)
    ratings[rng.random((args.units, len(raters))) < 0.02] = -1  # and skips 2%
    codes.append(agreement.Code(f"field_{c // 8}", f"value_{c}", ("absent", "present"), ratings))

start = time.perf_counter()
weights = agreement.bootstrap_weights(args.units, args.resamples, seed=1)
rows, confusion = agreement.evaluate(codes, raters, ["model"], "majority", weights)
elapsed = time.perf_counter() - start
print(
    f"{args.units} units x {args.codes} codes x {len(raters)} raters, {args.resamples} resamples: "
    f"{len(rows)} estimates with intervals in {elapsed:.1f} s"
)
