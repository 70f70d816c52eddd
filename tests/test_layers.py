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
    {"coding"},
    {"results", "archive", "estimate", "provenance", "validity", "review", "corrections", "preflight"},
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
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", sorted(SRC.glob("*.py")), ids=lambda p: p.name)
def test_no_module_imports_one_above_it(path):
    here = _level(path.stem)
    above = sorted(m for m in _imports(path) if _level(m) > here)
    assert not above, f"{path.name} (layer {here}) imports {above} from above it"


def _loaded_by(*modules: str) -> set[str]:
    code = f"import sys\nimport {', '.join(modules)}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_ingest_and_chunk_jobs_load_no_model_client():
    loaded = _loaded_by("qualcode.config", "qualcode.ingest", "qualcode.logs", "qualcode.tables", "qualcode.chunking",
                        "qualcode.shards")  # fmt: skip
    assert not loaded & {"openai", "llama_cpp", "tenacity", "qualcode.client", "qualcode.coding", "pandas"}


def test_a_coding_job_loads_openai_only_to_send_a_request():
    loaded = _loaded_by("qualcode.cache", "qualcode.coding", "qualcode.prompts", "qualcode.tables", "qualcode.shards")
    assert not loaded & {"openai", "llama_cpp", "pandas", "qualcode.api"}
