"""The layer rule (docs/architecture.md), checked on every module's imports.

Layers, lowest first; a module may import its own layer and those below, never above:

1. ``enclave_worker.trusted`` — measured enclave code: the standard library and the pinned
   third-party distributions of ``enclave_worker.measurement.TRUSTED_DEPENDENCIES`` only;
2. ``marketplace`` — the SDK;
3. ``enclave_worker`` (the host side) and ``oracle`` — services;
4. ``sterling`` — applications (CLI, ``sterling up``, demo, gateway).

``benchmarks`` and ``tests`` sit outside the installed packages: they may import anything, and
nothing in the packages imports them. Between packages the import graph has no cycle, so no two
packages import each other (within layer 3, ``oracle`` uses ``enclave_worker``'s host, never the
reverse). Every import counts: module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from enclave_worker.measurement import TRUSTED_DEPENDENCIES

REPO = Path(__file__).resolve().parents[1]

PACKAGES: dict[str, int] = {
    "enclave_worker.trusted": 1,
    "marketplace": 2,
    "enclave_worker": 3,
    "oracle": 3,
    "sterling": 4,
}
"""Package → layer. A module belongs to the longest package name that prefixes it."""
OUTSIDE = ("benchmarks", "tests")
"""Top-level folders outside the installed packages: they may import anything; nothing imports them."""
SCANNED = ("enclave_worker", "marketplace", "oracle", "sterling")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module, absolute
    line: int


def package_of(module: str) -> str | None:
    """The layer package a module belongs to (``None``: not Sterling's)."""
    best = None
    for package in PACKAGES:
        if (module == package or module.startswith(package + ".")) and (best is None or len(package) > len(best)):
            best = package
    return best


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> Iterator[Import]:
    """Every import of every module under ``root``'s scanned packages, made absolute."""
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            module = _module_name(root, path)
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield Import(module, alias.name, node.lineno)
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                        target = ".".join([*base, node.module] if node.module else base)
                    else:
                        target = node.module or ""
                    yield Import(module, target, node.lineno)
                    for alias in node.names:  # `from pkg import submodule`
                        yield Import(module, f"{target}.{alias.name}", node.lineno)


def layer_violations(root: Path) -> list[str]:
    """What breaks the layer rule in the tree at ``root``, one sentence each (empty: none)."""
    problems: list[str] = []
    allowed_third_party = set(TRUSTED_DEPENDENCIES.values())
    edges: dict[str, set[str]] = {}
    for imp in imports(root):
        source = package_of(imp.module)
        assert source is not None, imp.module
        top = imp.target.split(".")[0]
        where = f"{imp.module} (line {imp.line})"
        if top in OUTSIDE:
            problems.append(f"{where} imports {imp.target}, which is outside the installed packages")
            continue
        target = package_of(imp.target)
        if source == "enclave_worker.trusted" and target != source:
            if target is not None:
                problems.append(f"{where}: measured code imports {imp.target} from outside the measured package")
            elif top not in sys.stdlib_module_names and top not in allowed_third_party:
                problems.append(
                    f"{where}: measured code imports {top!r}, which is neither the standard library nor in "
                    "enclave_worker.measurement.TRUSTED_DEPENDENCIES"
                )
            continue
        if target is None or target == source:
            continue
        if PACKAGES[target] > PACKAGES[source]:
            problems.append(f"{where} imports {imp.target}: layer {PACKAGES[source]} ({source}) must not import layer {PACKAGES[target]} ({target})")
        edges.setdefault(source, set()).add(target)
    problems += [f"packages import each other in a cycle: {' -> '.join(cycle)}" for cycle in _cycles(edges)]
    return sorted(set(problems))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of packages (depth-first search)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def test_every_module_imports_only_its_layer_and_below() -> None:
    assert layer_violations(REPO) == []


def test_every_module_belongs_to_a_layer() -> None:
    tops = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    assert tops == {"enclave_worker", "marketplace", "oracle", "sterling", "benchmarks", "tests"}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for top in SCANNED:
        shutil.copytree(REPO / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__", "web", "artifacts"))
    assert layer_violations(tmp_path) == []
    return tmp_path


def _plant(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_a_planted_back_import_is_refused(tree: Path) -> None:
    _plant(tree / "marketplace" / "chain.py", "from sterling.up import run_up  # planted")
    problems = layer_violations(tree)
    assert any("marketplace.chain" in p and "layer 2 (marketplace) must not import layer 4 (sterling)" in p for p in problems), problems
    # ... and the back edge closes a cycle (sterling imports marketplace).
    assert any("cycle" in p and "marketplace" in p and "sterling" in p for p in problems), problems


def test_a_lazy_back_import_inside_a_function_is_refused(tree: Path) -> None:
    _plant(tree / "oracle" / "dispatcher.py", "def _planted() -> None:\n    from sterling.gateway import app  # noqa")
    assert any("oracle.dispatcher" in p and "layer 4" in p for p in layer_violations(tree))


def test_services_of_one_layer_must_not_import_each_other_both_ways(tree: Path) -> None:
    _plant(tree / "enclave_worker" / "worker.py", "import oracle.indexer  # planted")
    assert any("cycle" in p and "oracle" in p and "enclave_worker" in p for p in layer_violations(tree))


def test_measured_code_is_held_to_its_dependency_list(tree: Path) -> None:
    _plant(tree / "enclave_worker" / "trusted" / "dataset.py", "import yaml  # planted")
    assert any("'yaml'" in p and "TRUSTED_DEPENDENCIES" in p for p in layer_violations(tree))
    _plant(tree / "enclave_worker" / "trusted" / "sealing.py", "from marketplace import errors  # planted")
    assert any("enclave_worker.trusted.sealing" in p and "outside the measured package" in p for p in layer_violations(tree))


def test_packages_never_import_benchmarks_or_tests(tree: Path) -> None:
    _plant(tree / "sterling" / "cli.py", "from benchmarks import bench_dp  # planted")
    assert any("outside the installed packages" in p for p in layer_violations(tree))


def test_every_trusted_dependency_is_imported_and_installed() -> None:
    """The list holds no dead entry: each import name is used by measured code and resolves to its distribution."""
    from importlib import metadata

    used = {imp.target.split(".")[0] for imp in imports(REPO) if package_of(imp.module) == "enclave_worker.trusted"}
    for distribution, name in TRUSTED_DEPENDENCIES.items():
        assert name in used, f"{distribution} is measured but the trusted code does not import {name}"
        providers = {d.replace("-", "_").lower() for d in metadata.packages_distributions().get(name, [])}
        assert distribution.replace("-", "_").lower() in providers, f"{name} is not provided by {distribution}"
