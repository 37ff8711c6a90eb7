"""The homes of the code and the direction of their imports (docs/layout.md).

Every import of one of our packages, at the top of a module or inside a function, is read from the
source; a package may import only the packages on lower rows, the entry points import none of each
other, and the package graph has no cycle.
"""

import ast
from pathlib import Path
from typing import Dict, Set

import pytest

from launchers import REPO_ROOT

# Lower rows first; a package may import its own row's other packages only where listed in SAME_ROW.
ROWS = [
    ["common"],
    ["audio", "face_detection"],
    ["dataset"],
    ["guided_diffusion"],
    ["training"],
    ["inference"],
    ["evaluation"],
]
PACKAGES = {name: row for row, names in enumerate(ROWS) for name in names}
# The commands users type and the secondary ones: they may import every package, never each other.
ENTRY_POINTS = ["generate", "generate_dist", "train", "evaluate", "demo", "app"]
SCRIPTS_PACKAGE = "scripts"


def _our_imports(path: Path) -> Set[str]:
    """The top-level names of our packages and entry points that `path` imports."""
    ours = set(PACKAGES) | set(ENTRY_POINTS) | {SCRIPTS_PACKAGE}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in ours)
    return found


def _package_imports() -> Dict[str, Dict[str, Set[str]]]:
    """{package: {module path: packages it imports}} for every package of ROWS."""
    graph = {}
    for package in PACKAGES:
        graph[package] = {
            str(path.relative_to(REPO_ROOT)): _our_imports(path) - {package}
            for path in sorted((REPO_ROOT / package).rglob("*.py"))
        }
    return graph


def test_every_package_of_ours_has_a_row():
    top = {p.name for p in REPO_ROOT.iterdir() if (p / "__init__.py").exists()}
    assert top - {SCRIPTS_PACKAGE, "tests", "benchmarks"} == set(PACKAGES)


@pytest.mark.parametrize("package", list(PACKAGES))
def test_a_package_imports_only_packages_below_it(package):
    upward = {
        module: sorted(imported for imported in imports if imported not in PACKAGES or PACKAGES[imported] >= PACKAGES[package])
        for module, imports in _package_imports()[package].items()
    }
    assert {module: names for module, names in upward.items() if names} == {}


def test_the_bottom_layer_imports_nothing_of_ours():
    assert {m: sorted(i) for m, i in _package_imports()["common"].items() if i} == {}


def test_the_package_graph_has_no_cycle():
    edges = {package: set().union(*modules.values()) & set(PACKAGES) for package, modules in _package_imports().items()}
    done, on_path = set(), []

    def visit(package):
        assert package not in on_path, f"import cycle: {' -> '.join(on_path + [package])}"
        if package in done:
            return
        on_path.append(package)
        for imported in sorted(edges[package]):
            visit(imported)
        on_path.pop()
        done.add(package)

    for package in sorted(edges):
        visit(package)
    assert done == set(PACKAGES)


def test_no_entry_point_or_script_imports_another():
    commands = [REPO_ROOT / f"{name}.py" for name in ENTRY_POINTS]
    commands += sorted((REPO_ROOT / SCRIPTS_PACKAGE).glob("*.py"))
    importing = {}
    for path in commands:
        others = _our_imports(path) & (set(ENTRY_POINTS) | {SCRIPTS_PACKAGE})
        if others:
            importing[str(path.relative_to(REPO_ROOT))] = sorted(others)
    assert importing == {}


def test_the_top_level_holds_only_what_users_type():
    scripts = {p.stem for p in REPO_ROOT.glob("*.py")}
    assert scripts == set(ENTRY_POINTS)


def test_packages_and_benchmarks_import_no_entry_point():
    offenders = {}
    for folder in [*PACKAGES, "benchmarks"]:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            entry = _our_imports(path) & (set(ENTRY_POINTS) | {SCRIPTS_PACKAGE})
            if entry:
                offenders[str(path.relative_to(REPO_ROOT))] = sorted(entry)
    assert offenders == {}
