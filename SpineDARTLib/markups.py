"""Slicer markups files (``.mrk.json``, markups schema v1.0.3) for planned cannulas.

Slicer keeps RAS inside and writes markups as LPS on disk; so do we: positions are converted here,
the one place a markups file is written or read, and the file says ``"coordinateSystem": "LPS"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_json
from .errors import UserError

MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
_LPS = np.array([-1.0, -1.0, 1.0])
SAFE_RGB = (0.1, 0.8, 0.2)
UNSAFE_RGB = (0.95, 0.15, 0.1)


def write_line(
    path: str | Path,
    start_ras: np.ndarray,
    end_ras: np.ndarray,
    name: str,
    labels: tuple[str, str] = ("entry", "target"),
    description: str = "",
    color: tuple[float, float, float] = SAFE_RGB,
    diameter_mm: float | None = None,
) -> Path:
    """One markups line (entry → target), written atomically, LPS on disk."""
    points = []
    for i, (p, label) in enumerate(zip((start_ras, end_ras), labels, strict=True)):
        lps = np.asarray(p, float) * _LPS
        if lps.shape != (3,) or not np.isfinite(lps).all():
            raise UserError(f"{name}: {label} point is not a finite 3-D point", "check the plan")
        points.append(
            {
                "id": str(i + 1),
                "label": label,
                "description": "",
                "position": [round(float(x), 4) for x in lps],
                "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                "selected": True,
                "locked": True,
                "visibility": True,
                "positionStatus": "defined",
            }
        )
    display: dict[str, Any] = {"visibility": True, "color": list(color), "selectedColor": list(color)}
    if diameter_mm is not None:
        # Drawn as a tube as thick as the cannula (absolute size in mm).
        display.update(lineThickness=float(diameter_mm), useGlyphScale=False, glyphSize=float(diameter_mm))
    doc = {
        "@schema": MARKUPS_SCHEMA,
        "markups": [
            {
                "type": "Line",
                "name": name,
                "description": description,
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "locked": True,
                "controlPoints": points,
                "measurements": [],
                "display": display,
            }
        ],
    }
    atomic_write_json(Path(path), doc)
    return Path(path)


def read_line(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(start RAS, end RAS, name) of a markups line file written by :func:`write_line` or Slicer."""
    try:
        doc = json.loads(Path(path).read_text())
        m = doc["markups"][0]
        pts = np.array([cp["position"] for cp in m["controlPoints"]], float)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise UserError(f"not a markups line file ({exc.__class__.__name__})", "give a .mrk.json line", path) from None
    if m.get("type") != "Line" or pts.shape != (2, 3):
        raise UserError("not a two-point markups line", "give a .mrk.json line", path)
    if m.get("coordinateSystem", "LPS") == "LPS":
        pts = pts * _LPS
    return pts[0], pts[1], str(m.get("name", ""))
