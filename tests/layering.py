"""Who may import whom, read from the source (every import statement, function-local ones included).

    spec  <-  contract  <-  backends  <-  {conformance, bench, training, tools}

A module may import its own folder and the folders below it, never one above it or a sibling at the top (the
conformance suite, the benchmarks, the training runs and the porting tool stand side by side); no circle of
imports among the project's modules, however it is hidden; no private name (``_x``) taken from a module of another
folder; no library module imports a conftest. :func:`violations` checks a tree and says each violation in a line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

#: Each folder's level: a module imports only from lower levels and its own folder.
LEVELS = {"spec": 0, "contract": 1, "backends": 2, "conformance": 3, "bench": 3, "training": 3, "tools": 3}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted (a project module)
    names: tuple[str, ...]  # the names taken from it (from x import a, b); () for `import x`
    line: int
    #: Private attributes read off what was imported (``row._cache``, ``module._helper``), with their lines.
    private_uses: tuple[tuple[str, int], ...] = ()


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Every module under the folders of :data:`LEVELS`, by dotted name."""
    modules = {}
    for folder in LEVELS:
        for path in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() else ():
            modules[module_name(root, path)] = path
    return modules


def imports(root: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of a project module by a project module, wherever the statement is."""
    found = []
    for source, path in modules.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        uses = _private_attributes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = _project(alias.name, modules)
                    if target:
                        bound = alias.asname or alias.name
                        found.append(Import(source, target, (), node.lineno, tuple(uses.get(bound, ()))))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = tuple(alias.name for alias in node.names)
                for name in names:  # `from pkg import module` imports the module
                    if f"{base}.{name}" in modules:
                        found.append(Import(source, f"{base}.{name}", (), node.lineno))
                target = _project(base, modules)
                taken = tuple(n for n in names if f"{base}.{n}" not in modules)
                if target and taken:  # `from pkg import module` alone does not use pkg's own names
                    bound = [alias.asname or alias.name for alias in node.names]
                    found.append(Import(source, target, taken, node.lineno, tuple(u for b in bound for u in uses.get(b, ()))))
    return found


def _private_attributes(tree: ast.AST) -> dict[str, list[tuple[str, int]]]:
    """For every name, the private attributes read off it (``name._x``, not dunders), with their lines."""
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            uses.setdefault(node.value.id, []).append((node.attr, node.lineno))
    return uses


def _project(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` is (or is inside), if any."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _folder(module: str) -> str:
    return module.split(".")[0]


def cycles(found: list[Import]) -> list[list[str]]:
    """Every circle of imports among project modules (strongly connected components of more than one module, or a
    module importing itself), each as its modules in order."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def violations(root: Path) -> list[str]:
    """Every break of the rules (module docstring), one line each."""
    modules = project_modules(root)
    found = imports(root, modules)
    problems = []
    for imp in found:
        source, target = _folder(imp.source), _folder(imp.target)
        where = f"{modules[imp.source].relative_to(root)}:{imp.line}"
        if imp.target.split(".")[-1] == "conftest":
            problems.append(f"{where}: {imp.source} imports {imp.target}, a conftest (a library module never imports one)")
        if source != target and LEVELS[target] >= LEVELS[source]:
            how = "a sibling at the top" if LEVELS[target] == LEVELS[source] else "a folder above it"
            problems.append(f"{where}: {imp.source} imports {imp.target}: {target}/ is {how} ({source}/ may import only "
                            f"{', '.join(f for f, level in LEVELS.items() if level < LEVELS[source]) or 'nothing of the project'})")
        private = [name for name in imp.names if name.startswith("_") and not name.startswith("__")]
        if private and source != target:
            problems.append(f"{where}: {imp.source} takes private {', '.join(private)} from {imp.target} (another folder)")
        if imp.private_uses and source != target:
            for attribute, line in imp.private_uses:
                problems.append(f"{modules[imp.source].relative_to(root)}:{line}: {imp.source} reads private .{attribute} "
                                f"of what it imported from {imp.target} (another folder)")
    for cycle in cycles(found):
        problems.append(f"a circle of imports: {' -> '.join(cycle)}")
    return problems


__all__ = ["LEVELS", "Import", "cycles", "imports", "project_modules", "violations"]
