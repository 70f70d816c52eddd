"""The library's layers: the import contracts in pyproject.toml ([tool.importlinter]) hold, and the jobs load only
what they use (the ingest and chunk jobs never load a model client; a fully cached coding job never loads openai)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint_imports(cwd: Path, src: Path) -> subprocess.CompletedProcess:
    """lint-imports on the contracts in cwd's pyproject.toml, analysing the package under src."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_imports_keep_the_contracts_in_pyproject():
    proc = _lint_imports(ROOT, ROOT / "src")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_an_upward_import_breaks_the_stages_contract(tmp_path):
    # the contracts must be live: a copy of the library where inputs imports reporting fails them
    shutil.copytree(
        ROOT / "src" / "qualcode", tmp_path / "src" / "qualcode", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    ingest = tmp_path / "src" / "qualcode" / "inputs" / "ingest.py"
    ingest.write_text(ingest.read_text(encoding="utf-8") + "\nfrom ..reporting import methods  # noqa\n")
    proc = _lint_imports(tmp_path, tmp_path / "src")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stages: root, inputs, coding" in proc.stdout and "BROKEN" in proc.stdout
    assert "qualcode.inputs.ingest -> qualcode.reporting.methods" in proc.stdout


def _loaded_by(*modules: str) -> set[str]:
    code = f"import sys\nimport {', '.join(modules)}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_ingest_and_chunk_jobs_load_no_model_client():
    loaded = _loaded_by("qualcode.config", "qualcode.inputs.ingest", "qualcode.logs", "qualcode.outputs.tables",
                        "qualcode.inputs.chunking", "qualcode.shards")  # fmt: skip
    assert not loaded & {"openai", "llama_cpp", "tenacity", "qualcode.coding.client", "qualcode.coding.coder", "pandas"}


def test_a_coding_job_loads_openai_only_to_send_a_request():
    loaded = _loaded_by(
        "qualcode.coding.cache",
        "qualcode.coding.coder",
        "qualcode.coding.prompts",
        "qualcode.outputs.tables",
        "qualcode.shards",
    )
    assert not loaded & {"openai", "llama_cpp", "pandas", "qualcode.coding.api"}
