"""The fluoroscopic rule, checked on the two views the plan was made from.

On the AP-most view the cannula tip must not cross the medial wall of the pedicle before the
other (lateral-most) view shows it past the posterior wall of the body: crossing the medial wall
earlier means the tip is in the canal. The walls are taken from the fitted vertebra: the medial
pedicle wall as the canal wall's lateral-most point at the pedicle (part labels), the posterior
wall as the PWM landmark; both are projected into their view and compared along the image
direction of the anatomical axis (medial on AP, anterior on the lateral view).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..anatomy.vertebra import PART_NAMES
from ..geometry.projection import Projection
from .cannula import Cannula
from .safety import Bone

PEDICLE_BAND_MM = 5.0  # canal wall points this close to the isthmus (cranio-caudal, antero-posterior)
STEP_MM = 0.25


@dataclass
class FluoroCheck:
    ok: bool | None  # None: not checkable (no part labels)
    ap_view: int
    ap_angle_deg: float  # the AP-most view's angle from the vertebra's AP axis
    lateral_angle_deg: float  # the other view's angle from the vertebra's lateral axis
    medial_wall_at_mm: float | None  # depth along the cannula where the tip crosses it on AP (None: never)
    posterior_wall_at_mm: float | None  # depth where the tip passes it on the lateral view
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(float(x), 2)  # noqa: E731
        return {
            "ok": self.ok,
            "ap_view": self.ap_view,
            "ap_angle_deg": r(self.ap_angle_deg),
            "lateral_angle_deg": r(self.lateral_angle_deg),
            "medial_wall_at_mm": r(self.medial_wall_at_mm),
            "posterior_wall_at_mm": r(self.posterior_wall_at_mm),
            "reason": self.reason,
        }


def _image_direction(p: Projection, at: np.ndarray, direction: np.ndarray) -> np.ndarray:
    uv = p.project(np.stack([at, at + direction]))
    d = uv[1] - uv[0]
    return d / max(np.linalg.norm(d), 1e-9)


def _first(mask: np.ndarray, s: np.ndarray) -> float | None:
    idx = np.flatnonzero(mask)
    return float(s[idx[0]]) if len(idx) else None


def medial_wall_point(bone: Bone, side: str) -> np.ndarray | None:
    """The canal wall's point furthest towards this side at the pedicle isthmus, or None."""
    if bone.part_labels is None:
        return None
    x, y, z = bone.axes()
    sx = -1.0 if side == "left" else 1.0
    pc = np.asarray(bone.landmarks["PCL" if side == "left" else "PCR"], float)
    bc = np.asarray(bone.landmarks["BC"], float)
    v = bone.vertices[np.asarray(bone.part_labels) == PART_NAMES.index("canal_wall")]
    rel = v - pc
    near = (np.abs(rel @ z) < PEDICLE_BAND_MM) & (np.abs(rel @ y) < PEDICLE_BAND_MM) & (sx * ((v - bc) @ x) > 0)
    if not near.any():
        return None
    cand = v[near]
    return cand[np.argmax(sx * ((cand - bc) @ x))]


def fluoro_rule(bone: Bone, c: Cannula, projections: list[Projection]) -> FluoroCheck:
    x, y, _ = bone.axes()
    cos_ap = [abs(float(p.view_direction @ y)) for p in projections]
    ap = int(np.argmax(cos_ap))
    lat = 1 - ap
    ap_angle = float(np.degrees(np.arccos(min(cos_ap[ap], 1.0))))
    lat_angle = float(np.degrees(np.arccos(min(abs(float(projections[lat].view_direction @ x)), 1.0))))
    wall = medial_wall_point(bone, c.side)
    if wall is None:
        return FluoroCheck(None, ap, ap_angle, lat_angle, None, None, "no canal wall found at the pedicle")
    medial = x if c.side == "left" else -x
    s = np.arange(0.0, c.length_mm + 1e-9, STEP_MM)
    tips = c.entry + s[:, None] * c.direction
    p_ap, p_lat = projections[ap], projections[lat]
    m2 = _image_direction(p_ap, wall, medial)
    crossed = (p_ap.project(tips) - p_ap.project(wall[None])[0]) @ m2 > 0
    pwm = np.asarray(bone.landmarks["PWM"], float)
    a2 = _image_direction(p_lat, pwm, y)
    passed = (p_lat.project(tips) - p_lat.project(pwm[None])[0]) @ a2 >= 0
    s_med, s_wall = _first(crossed, s), _first(passed, s)
    ok = s_med is None or (s_wall is not None and s_wall <= s_med)
    reason = "" if ok else (
        f"on the AP view the tip crosses the medial pedicle wall at {s_med:.1f} mm, before the lateral view "
        f"shows it past the posterior body wall ({'never' if s_wall is None else f'{s_wall:.1f} mm'})"
    )  # fmt: skip
    return FluoroCheck(bool(ok), ap, ap_angle, lat_angle, s_med, s_wall, reason)
