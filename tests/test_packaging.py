"""environment.yml installs what pyproject.toml declares: every dependency, with the same version bounds."""

from __future__ import annotations

import importlib.metadata
import re

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from conftest import REPO

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

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
