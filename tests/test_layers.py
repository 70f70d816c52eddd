"""The library's layers: a module never imports one above it, and the jobs load only what they use (the ingest
and chunk jobs never load a model client; a fully cached coding job never loads openai)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "qualcode"

# Bottom to top. A module may import from its own layer or the layers below, never above. `client` (the factory)
# imports `api` at the first cache miss, which is downward.
LAYERS = [
    {"errors", "ids"},
    {"logs", "records", "config", "pages"},
    {"codebook", "ingest", "chunking", "validate", "shards", "prompts", "agreement"},
    {"tables", "limits", "cache", "gold", "qdpx"},
    {"journal", "api"},
    {"client"},
    {"coder"},
    {"results", "archive", "estimate", "provenance", "validation", "review", "corrections", "preflight"},
    {"methods", "report"},
    {"cli", "__main__", "__init__"},
]


def _level(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    raise AssertionError(f"src/qualcode/{module}.py is in no layer of tests/test_layers.py: place it")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            last = (node.module or "").split(".")[-1]
            if not last or (SRC / last).is_dir():  # `from ..outputs import tables` imports the module `tables`
                found.update(alias.name for alias in node.names)
            else:
                found.add(last)
    return found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_one_above_it(path):
    here = _level(path.stem)
    above = sorted(m for m in _imports(path) if _level(m) > here)
    assert not above, f"{path.name} (layer {here}) imports {above} from above it"


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
