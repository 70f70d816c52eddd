"""The workflow passes `snakemake --lint` (apart from the advice to pin a conda env or container per
rule: the environment is pinned once, by pyproject.toml / environment.yml) and snakefmt."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent


def test_snakemake_lint_is_clean():
    proc = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    lints = re.findall(r"^\s+\* (.+?):?$", proc.stdout + proc.stderr, flags=re.MULTILINE)
    assert lints, proc.stdout + proc.stderr  # the lint ran and reported in its usual form
    assert [x for x in lints if "conda environment or container" not in x] == []


def test_snakefmt_is_clean():
    files = ["Snakefile", *map(str, sorted((REPO / "workflow/rules").glob("*.smk")))]
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_ruff_is_clean():
    proc = subprocess.run(
        [str(BIN / "ruff"), "check", "src", "tests", "workflow/scripts"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
