"""Dependencies point one way: the import graph of chunkstore and its command line, read from the
source with `ast`, has no cycles and no import from a lower layer into a higher one.

Every import counts, wherever it is written: at the top of a module, inside a function, or
under `if TYPE_CHECKING:` (a type-only import that closes a cycle is still a cycle in the design).

The layers, lowest first: chunkstore.errors; chunkstore.core (formats, chunking, hashing; no
I/O); chunkstore.backends (blob stores, catalogs, AWS plumbing); chunkstore.operations (put,
read, maintenance, history); chunkstore.store and the package's own __init__ (which exports
Store); chunkstore.apps (server, ingest, scan); the command line (cli/, installed as
chunkstore_cli). Nothing in chunkstore imports click or the command line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Source folder -> the package name it installs as.
SOURCES = {"chunkstore": "chunkstore", "cli": "chunkstore_cli"}

# Which modules each part of the library must not import (by name or name prefix).
FORBIDDEN = {
    "chunkstore.core": ("chunkstore.backends", "chunkstore.operations", "chunkstore.apps", "chunkstore.store"),
    "chunkstore.backends": ("chunkstore.operations", "chunkstore.apps", "chunkstore.store"),
    "chunkstore.operations": ("chunkstore.apps", "chunkstore.store"),
    "chunkstore": ("click", "chunkstore_cli", "cli"),
}
# `import chunkstore` / `from chunkstore import X` runs the package's __init__, which imports
# chunkstore.store: for the layers below the store it is an import of the store.
PACKAGE_ROOT_LAYER = "chunkstore.store"

# No module breaks the rules; a new break fails the tests below.
KNOWN_LAYER_VIOLATIONS: set[str] = set()
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_files() -> Iterator[tuple[str, Path]]:
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([package, *parts]), path


def imported_names(module: str, path: Path, modules: set[str]) -> set[str]:
    """The modules `module` imports anywhere in its source: internal ones by module name
    (`from package import submodule` names the submodule), external ones by top-level name."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                names.add(submodule if submodule in modules else base)
    return {name if name in modules else _internal_owner(name, modules) for name in names}


def _internal_owner(name: str, modules: set[str]) -> str:
    """The longest known module that name lies in (`chunkstore.x.Y` -> `chunkstore.x`), or
    the top-level name of an external import."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return parts[0]


def import_graph() -> dict[str, set[str]]:
    files = dict(module_files())
    modules = set(files)
    return {module: imported_names(module, path, modules) - {module} for module, path in files.items()}


def in_part(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def layer_violations(graph: dict[str, set[str]]) -> set[str]:
    found = set()
    for importer, imported in graph.items():
        for target in imported:
            as_layer = PACKAGE_ROOT_LAYER if target == "chunkstore" else target
            for part, forbidden in FORBIDDEN.items():
                if in_part(importer, part) and any(in_part(as_layer, banned) for banned in forbidden):
                    found.add(f"{importer} -> {target}")
    return found


def import_cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The groups of modules that reach one another through imports (Tarjan's strongly connected
    components of more than one module)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            component = set()
            member = ""
            while member != module:
                member = stack.pop()
                component.add(member)
            if len(component) > 1:
                found.add(frozenset(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def one_cycle(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """A shortest circle of imports through the first module of component (first == last)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph[module] & component):
                if target == start:
                    return [*paths[module], start]
                if target not in paths:
                    paths[target] = [*paths[module], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not a cycle")


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert {"chunkstore", "chunkstore.store", "chunkstore.core.chunking", "chunkstore_cli.main"} <= set(graph)
    # A relative import in the command line, and the package's own re-export of Store.
    assert "chunkstore_cli.commands.put" in graph["chunkstore_cli.main"]
    assert "chunkstore.store" in graph["chunkstore"]
    assert "click" in graph["chunkstore_cli.main"]


def test_imports_inside_functions_and_type_checking_blocks_count(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from chunkstore.store import Store\n"
        "def later():\n"
        "    from .sibling import thing\n"
        "    import chunkstore.core.chunking\n"
    )
    modules = {"chunkstore.store", "chunkstore.backends.sibling", "chunkstore.core.chunking"}
    assert imported_names("chunkstore.backends.sample", source, modules) == {"typing", *modules}


def test_no_import_cycles():
    graph = import_graph()
    cycles = import_cycles(graph)
    new = sorted(cycles - KNOWN_CYCLES, key=sorted)
    assert not new, "import cycles:\n" + "\n".join(
        f"{' -> '.join(one_cycle(graph, cycle))} (all of {sorted(cycle)})" for cycle in new
    )
    gone = sorted(KNOWN_CYCLES - cycles, key=sorted)
    assert not gone, "no longer cycles; delete from KNOWN_CYCLES:\n" + "\n".join(str(sorted(cycle)) for cycle in gone)


def test_layers_import_only_downwards():
    violations = layer_violations(import_graph())
    new = violations - KNOWN_LAYER_VIOLATIONS
    assert not new, "imports against the layers:\n" + "\n".join(sorted(new))
    gone = KNOWN_LAYER_VIOLATIONS - violations
    assert not gone, "no longer imported; delete from KNOWN_LAYER_VIOLATIONS:\n" + "\n".join(sorted(gone))


def test_finds_a_cycle_and_the_way_round_it():
    graph = {"a": {"b"}, "b": {"c", "x"}, "c": {"a"}, "x": set(), "y": {"y"}}
    assert import_cycles(graph) == {frozenset("abc")}
    assert one_cycle(graph, frozenset("abc")) == ["a", "b", "c", "a"]
