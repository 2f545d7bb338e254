"""Calibration errors on purpose: a view's geometry as a miscalibrated C-arm would report it.

The robustness study (``spinedart bench --perturb-geometry``) hands the fit these geometries while
the images stay those of the true ones, and scores against the truth: how much do Dice and the
trajectories suffer when the calibration is off? Each error has an exact magnitude and a random
direction, so a sweep over magnitudes moves along the same directions (monotone, comparable):

- ``angle_deg``: the whole C-arm (source and detector) rotated about the isocentre by exactly this
  angle, about a random axis perpendicular to the beam (a primary/secondary angle error);
- ``distance_mm``: the source-to-detector distance off by this much, random sign (a magnification
  error; the source stays put, the detector moves along the beam);
- ``offset_mm``: the detector shifted in its own plane by this much, random direction (the principal
  point off).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .projection import Projection

# Beyond these a "calibration error" is a different C-arm: the study's range is ±1-2°, ±5-10 mm.
MAX_ANGLE_DEG = 20.0
MAX_DISTANCE_MM = 200.0
MAX_OFFSET_MM = 50.0


@dataclass(frozen=True)
class Miscalibration:
    """Magnitudes of the three calibration errors (degrees, mm, mm)."""

    angle_deg: float = 0.0
    distance_mm: float = 0.0
    offset_mm: float = 0.0

    @property
    def is_zero(self) -> bool:
        return self.angle_deg == 0 and self.distance_mm == 0 and self.offset_mm == 0

    def to_list(self) -> list[float]:
        return [self.angle_deg, self.distance_mm, self.offset_mm]

    @classmethod
    def parse(cls, text: str) -> Miscalibration:
        """``"ANGLE_DEG,DISTANCE_MM,OFFSET_MM"`` (e.g. ``2,10,5``), each finite and in range."""
        parts = [p.strip() for p in str(text).split(",")]
        fix = "give three numbers ANGLE_DEG,DISTANCE_MM,OFFSET_MM, e.g. --perturb-geometry 2,10,5"
        if len(parts) != 3:
            raise UserError(f"--perturb-geometry {text!r} is not three numbers", fix)
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise UserError(f"--perturb-geometry {text!r} is not three numbers", fix) from None
        limits = (MAX_ANGLE_DEG, MAX_DISTANCE_MM, MAX_OFFSET_MM)
        if not all(np.isfinite(v) and 0 <= v <= hi for v, hi in zip(vals, limits, strict=True)):
            raise UserError(
                f"--perturb-geometry {text!r} is out of range",
                f"each error is >= 0 and at most {MAX_ANGLE_DEG:g} deg, {MAX_DISTANCE_MM:g} mm, {MAX_OFFSET_MM:g} mm",
            )
        return cls(*vals)


def _pivot(p: Projection) -> np.ndarray:
    if p.isocenter_mm is not None:
        return np.asarray(p.isocenter_mm, float)
    # No isocentre recorded: the point of the principal ray 60 % of the way to the detector
    # (a C-arm's isocentre sits there: 620 of 1020 mm).
    return p.source_mm + 0.6 * p.detector_distance_mm * p.view_direction


def _rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle_rad).as_matrix()


def perturb_projection(p: Projection, error: Miscalibration, rng: np.random.Generator) -> tuple[Projection, dict]:
    """``p`` with the calibration ``error`` applied (directions drawn from ``rng``, always the same
    number of draws, so the directions do not depend on the magnitudes); also what was applied."""
    beam = p.view_direction
    # A random direction perpendicular to the beam: the rotation axis.
    a = rng.normal(size=3)
    a -= (a @ beam) * beam
    sign = 1.0 if rng.random() < 0.5 else -1.0
    phi = rng.uniform(0.0, 2 * np.pi)
    K, R, t = p.K.copy(), p.R, p.t
    source = p.source_mm
    pivot = _pivot(p)
    Q = _rotation(a, np.radians(error.angle_deg))
    source = pivot + Q @ (source - pivot)
    R = R @ Q.T
    t = -R @ source
    f_mm = p.detector_distance_mm
    scale = (f_mm + sign * error.distance_mm) / f_mm
    K[0, 0] *= scale
    K[1, 1] *= scale
    du, dv = p.pixel_spacing_mm
    K[0, 2] += error.offset_mm * np.cos(phi) / du
    K[1, 2] += error.offset_mm * np.sin(phi) / dv
    out = Projection.from_KRt(K, R, t, p.image_size, p.pixel_spacing_mm, p.isocenter_mm)
    applied = {
        "angle_deg": error.angle_deg,
        "axis": (a / np.linalg.norm(a)).round(4).tolist(),
        "distance_mm": sign * error.distance_mm,
        "offset_mm": (error.offset_mm * np.array([np.cos(phi), np.sin(phi)])).round(3).tolist(),
    }
    return out, applied
