"""The DynamoDB catalog's modules import only the layers below them (so no cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import chunkstore.backends.dynamodb as package

PACKAGE = package.__name__
# Each module and the modules of the package it may import.
LAYERS = {
    "items": set(),
    "table": {"items"},
    "sessions": {"items", "table"},
    "packindex": {"items", "table", "sessions"},
    "commits": {"items", "table", "packindex"},
    "gc": {"items", "table", "sessions", "commits"},
    "catalog": {"items", "table", "sessions", "commits", "gc", "packindex"},
    "__init__": {"catalog", "table"},
}


def package_imports(module: Path) -> set[str]:
    """The modules of the package that a module imports (at any place in it, type-only imports included)."""
    imported = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
            imported.add(node.module.removeprefix(PACKAGE + "."))
        elif isinstance(node, ast.Import):
            imported.update(
                alias.name.removeprefix(PACKAGE + ".") for alias in node.names if alias.name.startswith(PACKAGE + ".")
            )
    return imported


def test_every_module_has_a_layer():
    assert {path.stem for path in Path(package.__file__).parent.glob("*.py")} == set(LAYERS)


def test_modules_import_only_the_layers_below_them():
    folder = Path(package.__file__).parent
    assert {name: package_imports(folder / f"{name}.py") - allowed for name, allowed in LAYERS.items()} == {
        name: set() for name in LAYERS
    }
