"""Layering rules of the library, checked on the source (ast), so a violation fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "SpineDARTLib"

# Lower layers never import higher ones (data flows load → detect → match → init → fit → plan →
# export). Modules are ranked; a module may import only modules of a rank <= its own.
RANK = {
    "errors": 0,
    "requirements": 0,
    "atomic": 1,
    "provenance": 1,
    "schemas": 1,
    "labelmaps": 1,
    "resources": 1,
    "devices": 1,
    "weights": 1,
    "geometry": 2,
    "meshing": 2,
    "surface": 2,
    "metrics": 2,
    "mesh_io": 2,
    "xray": 3,
    "realct": 3,
    "anatomy": 3,
    "beads": 4,
    "render": 4,
    "ssm": 4,
    "drr": 5,
    "fit": 5,
    "plan": 6,
    "nets": 6,
    "markups": 2,
    "overlay": 3,
    "export": 7,
    "pipeline": 7,
    "worker": 8,
    "mrml_plan": 8,
    "snapshot": 8,
    "mrml_view": 8,
    "synth": 6,
    "mrml": 8,
    "demo": 9,
    "bench": 9,
    "cli": 10,
}


def _imports(path: Path) -> set[str]:
    """Top-level names imported by a module, library-internal ones as 'SpineDARTLib.<name>'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg_parts = path.relative_to(LIB.parent).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg_parts[: len(pkg_parts) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
                if not node.module:
                    names.update(f"{mod}.{a.name}" for a in node.names)
                    continue
                names.add(mod)
            elif node.module:
                names.add(node.module)
    return names


def _top(module_path: Path) -> str:
    rel = module_path.relative_to(LIB)
    return rel.parts[0].removesuffix(".py")


def test_only_mrml_imports_slicer_and_nothing_imports_qt():
    offenders = []
    for f in LIB.rglob("*.py"):
        for name in _imports(f):
            root = name.split(".")[0]
            if root == "slicer" and f.name != "mrml.py":
                offenders.append(f"{f.relative_to(LIB)} imports slicer")
            if root in ("qt", "PythonQt", "ctk", "PyQt5", "PySide6"):
                offenders.append(f"{f.relative_to(LIB)} imports {root}")
    assert not offenders, offenders


def test_lower_layers_never_import_higher_ones():
    violations = []
    unranked = []
    for f in LIB.rglob("*.py"):
        if f.name == "__init__.py" and f.parent == LIB:
            continue
        me = _top(f)
        if me not in RANK:
            unranked.append(me)
            continue
        for name in _imports(f):
            if not name.startswith("SpineDARTLib."):
                continue
            other = name.split(".")[1]
            if other in RANK and RANK[other] > RANK[me]:
                violations.append(f"{f.relative_to(LIB)} (rank {RANK[me]}) imports {other} (rank {RANK[other]})")
    assert not unranked, f"give these modules a rank in test_layout.RANK: {sorted(set(unranked))}"
    assert not violations, violations


def test_scanner_sees_relative_imports():
    """The import scanner must resolve relative imports, or the rules above could never fail."""
    assert "SpineDARTLib.errors" in _imports(LIB / "geometry" / "projection.py")  # from ..errors import
    assert "SpineDARTLib.geometry" in _imports(LIB / "xray" / "image.py")  # from ..geometry import
    assert "SpineDARTLib.xray.dicom" in _imports(LIB / "xray" / "io.py")  # from . import dicom
