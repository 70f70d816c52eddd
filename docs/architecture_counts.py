"""The numbers in docs/architecture.md: lines per package and imports between packages.

    uv run python docs/architecture_counts.py

An import is one module importing another (grimp's graph, the one lint-imports checks); "between packages" counts
those whose two modules sit in different packages. The root's shared modules count as one package, `cli`,
`preflight` and `__main__` as another (the top).
"""

from __future__ import annotations

import collections
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parent.parent / "src" / "qualcode"
TOP = {"cli", "preflight", "__main__"}


def package(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (SRC / parts[1]).is_dir():
        return parts[1]
    return "top" if parts[-1] in TOP else "root"


def main() -> None:
    lines: collections.Counter[str] = collections.Counter()
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        lines[package(module)] += len(path.read_text(encoding="utf-8").splitlines())
    graph = grimp.build_graph("qualcode")
    between: collections.Counter[tuple[str, str]] = collections.Counter()
    total = 0
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            total += 1
            if package(module) != package(imported):
                between[package(module), package(imported)] += 1
    for name, count in lines.most_common():
        print(f"{name:10} {count:5} lines")
    print(f"{total} imports between modules, {sum(between.values())} between packages:")
    for (importer, imported), count in sorted(between.items()):
        print(f"  {importer} -> {imported}: {count}")


if __name__ == "__main__":
    main()
