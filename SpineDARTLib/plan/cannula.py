"""Cannulas: gauges, and the left/right transpedicular cannulas of a fitted vertebra.

The shape model carries each side's entry and target points (computed on every member by the
ground-truth rules of :mod:`SpineDARTLib.anatomy.landmarks`), so a fitted instance gives the
patient's trajectories directly; nothing is re-derived here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..anatomy.levels import check_level, is_thoracic
from ..errors import UserError

# Outer diameters (mm) of vertebroplasty cannulas (research/anatomy.md §2).
GAUGE_OD_MM = {11: 3.05, 13: 2.41, 15: 1.83}
SIDES = ("left", "right")


def default_gauge(level: str) -> int:
    """11 G at L1–L5, 13 G at T5–T12, 15 G at T1–T4 (a starting point the user can change)."""
    key = check_level(level)
    if not is_thoracic(key):
        return 11
    return 15 if int(key[1:]) <= 4 else 13


def check_gauge(gauge: int) -> int:
    if gauge not in GAUGE_OD_MM:
        raise UserError(f"gauge {gauge} G is not supported", f"choose one of {', '.join(map(str, GAUGE_OD_MM))}")
    return int(gauge)


def smaller_gauges(gauge: int) -> list[int]:
    """Thinner cannulas than ``gauge``, thickest first (a larger gauge number is thinner)."""
    return sorted(g for g in GAUGE_OD_MM if g > gauge)


@dataclass(frozen=True)
class Cannula:
    """One planned cannula, RAS mm: a cylinder of the gauge's outer diameter from entry to target."""

    side: str
    entry: np.ndarray
    target: np.ndarray
    gauge: int

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(self.target - self.entry))

    @property
    def direction(self) -> np.ndarray:
        d = self.target - self.entry
        return d / max(np.linalg.norm(d), 1e-9)

    @property
    def radius_mm(self) -> float:
        return GAUGE_OD_MM[self.gauge] / 2.0

    def with_gauge(self, gauge: int) -> Cannula:
        return Cannula(self.side, self.entry, self.target, check_gauge(gauge))

    def to_dict(self) -> dict:
        return {
            "side": self.side,
            "entry_ras_mm": [round(float(x), 3) for x in self.entry],
            "target_ras_mm": [round(float(x), 3) for x in self.target],
            "direction_ras": [round(float(x), 5) for x in self.direction],
            "length_mm": round(self.length_mm, 2),
            "gauge": self.gauge,
            "outer_diameter_mm": GAUGE_OD_MM[self.gauge],
        }


def cannulas_from_annotations(annotations: dict[str, np.ndarray], gauge: int) -> list[Cannula]:
    """Left and right cannulas from a (fitted) instance's annotation points."""
    check_gauge(gauge)
    out = []
    for side in SIDES:
        e, t = np.asarray(annotations[f"{side}_entry"], float), np.asarray(annotations[f"{side}_target"], float)
        if not (np.isfinite(e).all() and np.isfinite(t).all()) or np.linalg.norm(t - e) < 1.0:
            raise UserError(f"the {side} trajectory is degenerate (entry and target coincide or are not finite)",
                            "check the fit; it should be reported as failed")  # fmt: skip
        out.append(Cannula(side, e, t, gauge))
    return out
