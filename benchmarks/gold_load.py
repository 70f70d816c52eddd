"""Reading human codings at scale: `gold.load` on a tidy CSV of 261,000 rows (the size issue 22 timed at 178 s with
the row-by-row checks), with offsets, some quotes to locate and a few bad rows.

    uv run python benchmarks/gold_load.py [--rows 261000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qualcode.inputs import codebook
from qualcode.validity import gold

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=261_000)
    args = ap.parse_args()
    cb = codebook.load(ROOT / "config" / "codebook.yaml")
    codes = [(f.name, v.name) for f in cb.fields if f.type != "text" for v in (f.values or [])]
    rng = np.random.default_rng(0)
    n_docs = 5000
    texts = {f"doc{i:05d}.txt": "The masks ran out on the ward again this week. " * 20 for i in range(n_docs)}
    pick = rng.integers(0, len(codes), args.rows)
    start = rng.integers(0, 900, args.rows)
    df = pd.DataFrame({
        "coder": rng.choice(["ann", "bob", "cy"], args.rows),
        "doc_id": [f"doc{i:05d}.txt" for i in rng.integers(0, n_docs, args.rows)],
        "field": [codes[i][0] for i in pick],
        "value": [codes[i][1] for i in pick],
        "start": start,
        "end": start + rng.integers(1, 40, args.rows),
        "quote": "",
    })  # fmt: skip
    df.loc[df.index[::1000], "value"] = "bogus"  # a few bad rows, each listed
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gold.csv"
        df.to_csv(path, index=False)
        t0 = time.perf_counter()
        rows, problems = gold.load([path], cb, texts, unit="document", on_error="skip")
        took = time.perf_counter() - t0
    print(f"gold.load: {args.rows:,} tidy rows in {took:.1f} s ({len(rows):,} kept, {len(problems):,} listed)")


if __name__ == "__main__":
    main()
