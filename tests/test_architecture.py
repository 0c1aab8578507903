"""The package structure holds: no import cycle between the project's modules, and no module
reaches into another's private (underscore) names. Read from the source with ``ast``, so
function-local imports count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainers", "orchestrator", "analysis", "benchmarks")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The project module an imported dotted name lives in (a module, or a name inside one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(name: str, path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every project import in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if _target(full) == full:  # `from package import module`
                    found.append((full, "", node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    if name.startswith("benchmarks."):  # scripts that import their siblings by bare name
        found = [
            (f"benchmarks.{m}" if f"benchmarks.{m.split('.')[0]}" in MODULES else m, i, n)
            for m, i, n in found
        ]
    return [(_target(module), imported, line) for module, imported, line in found if _target(module)]


def test_no_module_imports_another_modules_private_names():
    offenders = [
        f"{MODULES[name].relative_to(REPO)}:{line} imports {imported} from {module}"
        for name, path in MODULES.items()
        for module, imported, line in _imports(name, path)
        if imported.startswith("_") and module != name
    ]
    assert not offenders, "\n".join(offenders)


def test_the_project_modules_have_no_import_cycle():
    graph = {name: {m for m, _, _ in _imports(name, path) if m != name} for name, path in MODULES.items()}
    # A package's __init__ importing nothing of its own keeps `pkg → pkg.module` edges harmless;
    # any cycle found is between modules that import each other, directly or around a loop.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" → ".join(cycle) for cycle in cycles)


def test_the_command_line_loads_no_heavy_library_before_a_command_runs():
    # `gammaray --help` and the parsing of every command stay fast: torch, ray, mlflow and the
    # rest are imported inside the commands that use them.
    heavy = ("torch", "ray", "mlflow", "deepspeed", "optuna", "plotly", "scipy")
    code = f"import sys, orchestrator.cli.main; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]", done.stdout
