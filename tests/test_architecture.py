"""The layering rules that import-linter cannot express (docs/architecture.md).

The layer order itself is the import-linter contract in pyproject.toml (``lint-imports``, run by ``make lint``).
Here: no module imports a private name (``_name``) or a private module (``pkg._module``) from another package,
and nothing below the top imports the root package ``propensity`` (the notebook facade).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((SRC / "propensity").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _package(module: str) -> str:
    """The stage package a module belongs to: ``propensity.scoring.batch`` → ``propensity.scoring``."""
    return ".".join(module.split(".")[:2])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def test_no_private_name_crosses_a_package_boundary() -> None:
    problems = []
    for module, tree in _modules():
        for line, target, names in _imports(tree):
            if not target.startswith("propensity.") or _package(target) == _package(module):
                continue
            where = f"{module}:{line}"
            if any(_private(part) for part in target.split(".")):
                problems.append(f"{where} imports the private module {target}")
            problems += [f"{where} imports the private name {target}.{n}" for n in names if _private(n)]
    assert not problems, "make these public in the lower package, or move them:\n" + "\n".join(problems)


def test_nothing_imports_the_root_facade() -> None:
    problems = [
        f"{module}:{line} imports from the root package (use propensity.core instead)"
        for module, tree in _modules()
        if module.count(".") >= 1 and not module.startswith("propensity.__main__")
        for line, target, _ in _imports(tree)
        if target == "propensity"
    ]
    assert not problems, "\n".join(problems)
