"""The layers of docs/ARCHITECTURE.md: every import inside `lift` points down the table (or within its own
package), and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

LIFT = Path(__file__).resolve().parents[1] / "lift"
# docs/ARCHITECTURE.md's table, top (imported by all) to bottom (imports all).
LAYERS = ["core", "io", "config", "data", "train", "models", "toy", "client", "stages", "serve", "report", "launch",
          "cli"]
TOP = {"cli", "pipeline", "__main__"}  # lift/cli.py, lift/pipeline.py, lift/__main__.py
MODULES = {"cli", "client"}  # layers that are one module (lift/client.py), not a package


def _module(path: Path) -> str:
    parts = path.relative_to(LIFT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else "cli"
    return LAYERS.index("cli" if part in TOP else part)


def _imports() -> dict[str, set[str]]:
    """Module -> the lift modules it imports (anywhere in the file, lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in LIFT.rglob("*.py"):
        mine = found.setdefault(_module(path), set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lift":
                mine.add(node.module)
                folder = LIFT.parent / node.module.replace(".", "/")
                mine.update(f"{node.module}.{a.name}" for a in node.names
                            if (folder / f"{a.name}.py").exists() or (folder / a.name).is_dir())
            elif isinstance(node, ast.Import):
                mine.update(a.name for a in node.names if a.name.split(".")[0] == "lift")
    return found


def test_imports_only_point_down_the_layers():
    upward = [(src, dst) for src, dsts in _imports().items() for dst in dsts
              if dst != "lift" and _layer(dst) > _layer(src)]
    assert not upward, f"imports against the layers: {upward}"


def test_no_import_cycles():
    imports = _imports()
    graph = {m: {d for d in ds if d in imports} for m, ds in imports.items()}
    cycles = [(a, b) for a, ds in graph.items() for b in ds if a != b and a in graph.get(b, ()) and
              not (b.startswith(a + ".") or a.startswith(b + "."))]  # a package and its own modules are one unit
    assert not cycles, f"modules that import each other: {cycles}"


def test_every_package_is_a_layer():
    packages = {p.name for p in LIFT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - MODULES
