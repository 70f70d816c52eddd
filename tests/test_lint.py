"""The workflow passes `snakemake --lint` (apart from the lints allowed below, each with its reason), snakefmt and
ruff."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from workflow_helpers import SNAKEMAKE, scratch_copy

BIN = Path(sys.executable).parent

# Lints we accept, by their title as `snakemake --lint` prints it. Anything else, for any rule or the Snakefile,
# fails the test.
ALLOWED_LINTS = {
    # The software is pinned once for the whole workflow, by pyproject.toml and environment.yml: every rule runs
    # the same qualcode package, so a conda environment or container per rule would only repeat that pin.
    "Specify a conda environment or container for each rule.",
}
LINT_TITLE = re.compile(r"^    \* (.+?):?$", flags=re.MULTILINE)  # "    * <title>:" under "Lints for rule ..."


def test_snakemake_lint_is_clean(tmp_path):
    workdir = scratch_copy(tmp_path / "wf")  # the lint parses the workflow, and may write .snakemake/ next to it
    proc = subprocess.run([SNAKEMAKE, "--lint"], cwd=workdir, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    lints = LINT_TITLE.findall(output)
    assert [title for title in lints if title not in ALLOWED_LINTS] == [], output
    # Exit status 0 means no lint at all; 1 means lints, all of them allowed above. Any other outcome (a workflow
    # that does not parse, a crash) has no lint titles to explain it.
    assert proc.returncode == (1 if lints else 0), output


def test_snakefmt_is_clean():
    files = ["Snakefile", *map(str, sorted((REPO / "workflow/rules").glob("*.smk")))]
    proc = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_ruff_is_clean():
    proc = subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", "src", "tests", "workflow/scripts"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout
