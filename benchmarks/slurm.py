"""The workflow on SLURM: sbatch calls and wall time of each pattern, side by side on the same scheduler.

    sudo .ci/slurm.sh start                  # or any SLURM you can submit to (partition: QUALCODE_PARTITION)
    python benchmarks/slurm.py [N_CHUNKS]    # default: the bundled example; N: a survey of N short answers

Against the protocol-level fake server (no model time), cold: the jobs through the executor plugin with the shipped
profile (coding on compute nodes, then on the submit host), and the whole workflow inside one allocation
(`sbatch --wait --wrap "snakemake --cores $SLURM_CPUS_PER_TASK"`). Prints sbatch calls, seconds, and the executor's
time over the one allocation's; on a shared, noisy machine quote the ratios.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from shard_granularity import corpus  # noqa: E402

from fakeserver import FakeServer  # noqa: E402
from workflow_helpers import SNAKEMAKE, fake_config, scratch_copy  # noqa: E402

# sbatch copies this environment into the jobs: this interpreter's snakemake first on PATH
PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
ENV = {**os.environ, "QUALCODE_TEST_KEY": "sk-test-benchmark", "PATH": PATH}
PARTITION = os.environ.get("QUALCODE_PARTITION", "debug")
# a test cluster without an accounting database: job states from squeue
STATUS = os.environ.get("QUALCODE_SLURM_STATUS", "squeue")


def workdir(tmp: str, name: str, n: int | None) -> Path:
    wd = scratch_copy(Path(tmp) / name, data=n is None)
    if n is not None:
        corpus(wd, n)
    prof = wd / "workflow/profiles/slurm/config.yaml"
    prof.write_text(prof.read_text().replace('slurm_partition: "EDIT-ME"', f'slurm_partition: "{PARTITION}"'))
    return wd


def executor(wd: Path, cfg: Path) -> tuple[int, float]:
    started = time.monotonic()
    cmd = [SNAKEMAKE, "--workflow-profile", "workflow/profiles/slurm", "--configfile", str(cfg)]
    proc = subprocess.run([*cmd, "--slurm-status-command", STATUS], cwd=wd, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return len(re.findall(r"submitted with SLURM jobid", proc.stdout + proc.stderr)), time.monotonic() - started


def allocation(wd: Path, cfg: Path) -> tuple[int, float]:
    started = time.monotonic()
    wrap = f'{SNAKEMAKE} --cores "$SLURM_CPUS_PER_TASK" --configfile {cfg}'
    cmd = ["sbatch", "--wait", "-p", PARTITION, "-c", str(os.cpu_count()), "-o", "alloc-%j.log", "--wrap", wrap]
    proc = subprocess.run(cmd, cwd=wd, env=ENV, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return 1, time.monotonic() - started


def main(n: int | None) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, FakeServer(seed=0) as server:
        for name, run, coding in (
            ("executor, coding on compute nodes", executor, "compute"),
            ("executor, coding on the submit host", executor, "submit_host"),
            ("one allocation", allocation, "auto"),
        ):
            wd = workdir(tmp, re.sub(r"\W+", "-", name), n)
            cfg = fake_config(wd, server, {"concurrency": 8}, cluster={"coding": coding})
            before = server.count()
            calls, wall = run(wd, cfg)
            rows.append((name, calls, wall, server.count() - before))
    base = rows[-1][2]
    print(f"{'the example' if n is None else f'{n} chunks'}, fake server (no model time), cold")
    print(f"{'pattern':<38} {'sbatch':>6} {'wall s':>8} {'requests':>9} {'vs one allocation':>18}")
    for name, calls, wall, sent in rows:
        print(f"{name:<38} {calls:>6} {wall:>8.1f} {sent:>9} {wall / base:>18.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
