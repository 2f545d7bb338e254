"""The paper's 2D-GeoPlan baseline: no shape model, no fit — the annotation network predicts each
cannula's entry and target points in each view, and the two views' points are triangulated into
the 3D cannula. What it lacks, and the fit supplies, is a bone to check the cannula against: its
cannulas carry no predicted safety, only the truth's grade in the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..geometry import Projection, triangulate
from .cannula import Cannula, default_gauge

SIDES = ("left", "right")
# A cannula whose points do not meet across the views (reprojection beyond this, in mm at the
# detector) is not triangulated: the two views' predictions describe different lines.
MAX_REPROJECTION_MM = 5.0


def geoplan_cannulas(
    paths: Sequence[dict[str, dict[str, np.ndarray]]], projections: Sequence[Projection], level: str
) -> tuple[list[Cannula], dict[str, str]]:
    """(cannulas, side → why not) from one vertebra's 2D paths in each view (side → entry/target →
    (u, v) pixels)."""
    cannulas, missing = [], {}
    for side in SIDES:
        if not all(side in p and {"entry", "target"} <= set(p[side]) for p in paths):
            missing[side] = "not predicted in both views"
            continue
        pts = [np.array([p[side]["entry"], p[side]["target"]], float) for p in paths]
        tri = triangulate(projections, pts)
        mm = max(float(np.mean(pr.pixel_spacing_mm)) for pr in projections)
        err = float(np.nanmax(tri.reprojection_px)) * mm
        if not np.all(np.isfinite(tri.points_mm)) or err > MAX_REPROJECTION_MM:
            missing[side] = f"the views' 2D paths do not meet ({err:.1f} mm reprojection)"
            continue
        cannulas.append(Cannula(side, tri.points_mm[0], tri.points_mm[1], default_gauge(level)))
    return cannulas, missing
