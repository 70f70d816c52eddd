"""Why coding runs in shards: wall time of the real workflow at one chunk per job versus shards.

    python benchmarks/shard_granularity.py [N_CHUNKS]

Runs the workflow through real Snakemake against the protocol-level fake server (no model time, so
what is measured is the workflow's own overhead), cold and then fully cached, for each shard size,
side by side in one run. Prints seconds and ratios; on shared, noisy machines quote the ratios.
"""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakeserver import FakeServer  # noqa: E402
from workflow_helpers import fake_config, run, scratch_copy  # noqa: E402

ENV = {"QUALCODE_TEST_KEY": "sk-test-benchmark"}


def corpus(workdir: Path, n: int) -> None:
    raw = workdir / "data" / "raw"
    raw.mkdir(parents=True)
    with open(raw / "survey.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"R{i:05d}", f"Answer {i}: we worked double shifts and shared masks with the night team."])


def timed(workdir: Path, cfg: Path, *extra: str) -> float:
    started = time.monotonic()
    run(workdir, "--configfile", str(cfg), *extra, env=ENV)
    return time.monotonic() - started


def main(n: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, FakeServer(seed=0) as server:
        for shard_size in (1, 25, n):
            wd = scratch_copy(Path(tmp) / f"shard{shard_size}", data=False)
            corpus(wd, n)
            cfg = fake_config(wd, server, {"concurrency": 8}, coding={"shard_size": shard_size})
            cold = timed(wd, cfg)
            warm = timed(wd, cfg, "--forcerun", "code_shard")
            rows.append((shard_size, -(-n // shard_size), cold, warm))
            shutil.rmtree(wd)
    base_cold, base_warm = rows[0][2], rows[0][3]
    print(f"{n} chunks, fake server (no model time), snakemake --cores 4, greedy scheduler")
    print(f"{'shard size':>10} {'jobs':>6} {'cold s':>8} {'cached s':>9} {'cold vs 1':>10} {'cached vs 1':>12}")
    for size, jobs, cold, warm in rows:
        print(f"{size:>10} {jobs:>6} {cold:>8.1f} {warm:>9.1f} {cold / base_cold:>10.2f} {warm / base_warm:>12.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
