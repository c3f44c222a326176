"""The package's stages import only downward: the layer order of docs/architecture.md, checked on every import."""

from __future__ import annotations

import ast
from pathlib import Path

import anomalib_ncd

# lowest first; a module may import from its own package and from lower layers only
LAYERS: list[set[str]] = [
    {"io", "threads", "quiet", "progress", "checkpoints"},
    {"backbones", "coreset", "results", "evaluation"},
    {"data", "priors"},
    {"detector"},
    {"models"},
    {"maps"},
    {"regions"},
    {"discovery", "baselines", "report"},
    {"pipeline", "review"},
    {"commands"},
    {"cli", "__init__"},
]
LAYER_OF = {package: number for number, packages in enumerate(LAYERS) for package in packages}
ROOT = Path(anomalib_ncd.__file__).parent


def _package(path: Path) -> str:
    relative = path.relative_to(ROOT)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, package)`` of every anomalib_ncd import in the file, module level and inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("anomalib_ncd."):
            found.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("anomalib_ncd."))
    return found


def test_every_package_has_a_layer():
    packages = {_package(path) for path in ROOT.rglob("*.py")}
    assert packages <= set(LAYER_OF), f"give these a layer here and in docs/architecture.md: {packages - set(LAYER_OF)}"


def test_imports_go_only_downward():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        source = _package(path)
        for line, target in _imports(path):
            if target != source and LAYER_OF[target] >= LAYER_OF[source]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({source}, layer {LAYER_OF[source]}) imports {target}")
    assert not upward, "\n".join(upward)


def test_the_architecture_document_lists_the_same_layers():
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    for number, packages in enumerate(LAYERS):
        line = next((row for row in text.splitlines() if row.startswith(f"| {number} |")), "")
        assert all(f"`{package}`" in line for package in packages), f"layer {number} of the document: {line!r}"
