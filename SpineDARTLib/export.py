"""Writing a plan: per vertebra a mesh (``.vtp`` with part labels and ``.stl``, LPS on disk) and one
markups line per cannula (``.mrk.json``); one overlay PNG per X-ray.

A failed fit is not exported as a plan: no markups, and its mesh only as ``<level>-FAILED.vtp``
for review. An unsafe cannula keeps its markups file but is named and coloured as unsafe, with its
reasons in the description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .markups import SAFE_RGB, UNSAFE_RGB, write_line
from .mesh_io import write_mesh
from .overlay import OverlayItem, draw_overlay


def write_outputs(out: Path, xrays, landmarks, targets, fitted, plans) -> dict[str, Any]:
    """Write every file of a plan into ``out``; returns their paths relative to it."""
    out.mkdir(parents=True, exist_ok=True)
    per_level: dict[str, Any] = {}
    for tgt, (bone, _), vp in zip(targets, fitted, plans, strict=True):
        level = tgt.level
        files: dict[str, Any] = {}
        if vp.status == "failed":
            write_mesh(out / f"{level}-FAILED.vtp", bone.vertices, bone.faces, tgt.model.part_labels)
            files["mesh_failed_vtp"] = f"{level}-FAILED.vtp"
            per_level[level] = files
            continue
        write_mesh(out / f"{level}.vtp", bone.vertices, bone.faces, tgt.model.part_labels)
        write_mesh(out / f"{level}.stl", bone.vertices, bone.faces)
        files.update(mesh_vtp=f"{level}.vtp", mesh_stl=f"{level}.stl", markups={})
        for cp in vp.cannulas:
            c = cp.cannula
            name = f"{level} {c.side} {c.gauge}G" + ("" if cp.safe else " UNSAFE")
            desc = "safe" if cp.safe else "UNSAFE: " + "; ".join(cp.reasons)
            fname = f"{level}-{c.side}.mrk.json"
            write_line(out / fname, c.entry, c.target, name, description=desc,
                       color=SAFE_RGB if cp.safe else UNSAFE_RGB, diameter_mm=2 * c.radius_mm)  # fmt: skip
            files["markups"][c.side] = fname
        per_level[level] = files
    overlays = []
    for i, x in enumerate(xrays):
        items = []
        for tgt, (bone, _), vp in zip(targets, fitted, plans, strict=True):
            ev = landmarks.views[i].get(tgt.level)
            items.append(
                OverlayItem(
                    tgt.level,
                    bone.vertices,
                    bone.faces,
                    [np.asarray(uv) for uv in ev.landmarks.values()] if ev else [],
                    [(cp.cannula.entry, cp.cannula.target, cp.safe, 2 * cp.cannula.radius_mm) for cp in vp.cannulas],
                    failed=vp.status == "failed",
                )
            )
        name = f"overlay_{'ab'[i]}.png"
        title = "  ".join(f"{vp.level}: {vp.status}" for vp in plans)
        draw_overlay(x.image, x.projection, items, out / name, title)
        overlays.append(name)
    return {"vertebrae": per_level, "overlays": overlays}
