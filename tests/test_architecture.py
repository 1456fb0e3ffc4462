"""The layering of docs/architecture.md, checked on every import in src/ (so the page stays true)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "faceatlas"

CORE = {"errors", "face", "vectors", "images", "models", "engine", "clustering", "quality"}
# package -> the top-level faceatlas packages it may import (besides itself and the package root).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "face": set(),
    "vectors": set(),
    "images": {"errors"},
    "models": {"errors", "face", "vectors"},
    "engine": CORE - {"clustering", "quality"},
    "clustering": CORE - {"quality"},
    "quality": CORE,
    "storage": {"errors", "vectors"},
    "index": CORE | {"storage"},
    "library": CORE | {"storage", "index"},
    "evaluation": CORE | {"library", "storage", "index"},
    "api": CORE | {"storage", "index", "web"},
    "web": CORE | {"storage", "index", "library", "evaluation"},
    "cli": CORE | {"storage", "index", "library", "evaluation", "api", "web"},
}
# The only front-end edges (docs/architecture.md): the entry point starts the server and reads its
# settings; the server app mounts the web app through one call.
FRONT_END_EDGES = {
    ("cli", "api"): {"faceatlas.cli.serve", "faceatlas.cli.services"},
    ("cli", "web"): {"faceatlas.cli.serve", "faceatlas.cli.web"},
    ("api", "web"): {"faceatlas.api.app"},
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "faceatlas"}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_import_follows_the_layers() -> None:
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        package = _package(module)
        if package is None or package == "__main__":
            continue
        assert package in ALLOWED, f"{package} is not in docs/architecture.md's table"
        for target in _imports(path):
            other = _package(target)
            if other is None or other == package:
                continue
            if other not in ALLOWED[package]:
                violations.append(f"{module} imports {target}")
            edge = FRONT_END_EDGES.get((package, other))
            if edge is not None and module not in edge:
                violations.append(f"{module} imports {target} (front ends do not import each other)")
    assert violations == []
