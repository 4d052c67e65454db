"""The package's layers (docs/CONTRIBUTING.md): no module imports a layer above it; functions stay short.

Read from the source with `ast`, imports inside functions included, so a lazy import cannot hide an
upward dependency.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "tf_freetickets"

# Bottom up. A module may import its own subpackage and any of a lower rank, nothing else.
RANKS = {
    "tensorflow_startup": 0,
    "keras_compat": 0,
    "losses": 1,
    "multi_worker": 1,
    "models": 1,
    "data": 1,
    "sparse": 2,
    "costs": 3,
    "deploy": 3,
    "metrics": 4,
    "ensembles": 5,
    "experiments": 6,
    "train": 7,
    "evaluate": 7,
    "export_main": 7,
    "__init__": 7,
    # The export binary's logic reads a training workdir (experiments) and loads ensembles: it sits
    # with the binaries although it lives beside the exporters it drives.
    "deploy.run_export": 6.5,
}
MAX_FUNCTION_LINES = 80


def _unit(path):
    """The unit `path` belongs to: its top-level module, or a submodule ranked on its own."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    dotted = ".".join(parts[:2])
    return dotted if dotted in RANKS else parts[0]


def _imported_units(tree):
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        units = set()
        for name in names:
            parts = name.split(".")
            if parts[0] == "tf_freetickets" and len(parts) > 1:
                dotted = ".".join(parts[1:3])
                units.add(dotted if dotted in RANKS else parts[1])
        for unit in sorted(units & set(RANKS)):
            yield node.lineno, unit


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_top_level_unit_has_a_layer():
    units = {_unit(path) for path in _modules()}
    assert sorted(units - set(RANKS)) == [], "place new top-level modules in RANKS here and in docs/CONTRIBUTING.md"


def test_no_module_imports_a_layer_above_it():
    violations = []
    for path in _modules():
        unit = _unit(path)
        for line, imported in _imported_units(ast.parse(path.read_text())):
            if imported != unit and RANKS[imported] >= RANKS[unit]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {unit} imports {imported}")
    assert violations == []


def test_the_checker_sees_an_upward_import_inside_a_function():
    tree = ast.parse("def f():\n    from tf_freetickets.ensembles import EDST\n")
    assert list(_imported_units(tree)) == [(2, "ensembles")]


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
