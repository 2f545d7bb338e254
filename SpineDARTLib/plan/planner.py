"""From a fitted vertebra to cannula plans with a go/no-go flag, its reasons and a suggestion.

A cannula is flagged **safe** only when, against the fitted shape: its wall stays at least
``margin_mm`` (default 1 mm, about the cortex) inside the bone all along its intraosseous part
(which makes the breach grade A), the tip lies in the anterior half of the body and inside it, and
the fluoroscopic rule holds on the two views. A vertebra whose fit did not converge gets no plan.
How often "safe" is wrong is measured by the benchmark (``false_safe_rate``), against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..anatomy.levels import is_thoracic
from ..geometry.projection import Projection
from .cannula import Cannula, cannulas_from_annotations, check_gauge, default_gauge, smaller_gauges
from .fluoro import FluoroCheck, fluoro_rule
from .safety import Bone, CannulaCheck, check_cannula

SAFETY_MARGIN_MM = 1.0


@dataclass
class CannulaPlan:
    cannula: Cannula
    check: CannulaCheck
    fluoro: FluoroCheck | None
    safe: bool
    reasons: list[str]
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.cannula.to_dict(),
            "safe": self.safe,
            "reasons": list(self.reasons),
            "suggestion": self.suggestion,
            "predicted": self.check.to_dict(),
            "fluoro_rule": None if self.fluoro is None else self.fluoro.to_dict(),
        }


@dataclass
class VertebraPlan:
    level: str
    status: str  # "go" (both cannulas safe), "no-go" (a fitted vertebra, a cannula unsafe), "failed" (no fit)
    fit_reason: str
    gauge: int
    cannulas: list[CannulaPlan] = field(default_factory=list)
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "status": self.status,
            "fit_reason": self.fit_reason,
            "gauge": self.gauge,
            "suggestion": self.suggestion,
            "cannulas": [c.to_dict() for c in self.cannulas],
        }


def _reasons(check: CannulaCheck, fluoro: FluoroCheck | None, margin_mm: float) -> list[str]:
    out = []
    if check.breach_mm > 0:
        out.append(f"breach grade {check.grade}: the wall is {check.breach_mm:.1f} mm outside the fitted cortex")
    elif check.clearance_mm < margin_mm:
        out.append(f"clearance {check.clearance_mm:.1f} mm < {margin_mm:g} mm inside the fitted cortex")
    if not check.tip_inside or check.tip_depth > 1.0:
        out.append("the tip is beyond the anterior cortex")
    elif check.tip_depth < 0.5:
        out.append(f"the tip is not in the anterior half of the body ({100 * check.tip_depth:.0f} % of its depth)")
    if fluoro is not None and fluoro.ok is False:
        out.append(fluoro.reason)
    return out


def assess(bone: Bone, c: Cannula, projections: list[Projection] | None, margin_mm: float) -> CannulaPlan:
    """Check one cannula against the fitted vertebra and flag it."""
    check = check_cannula(bone, c, margin_mm)
    fluoro = fluoro_rule(bone, c, projections) if projections else None
    reasons = _reasons(check, fluoro, margin_mm)
    return CannulaPlan(c, check, fluoro, not reasons, reasons)


def plan_vertebra(
    level: str,
    bone: Bone | None,
    annotations: dict[str, np.ndarray] | None,
    converged: bool,
    fit_reason: str,
    projections: list[Projection] | None = None,
    gauge: int | None = None,
    margin_mm: float = SAFETY_MARGIN_MM,
) -> VertebraPlan:
    """Plan both cannulas of one fitted vertebra; ``bone``/``annotations`` are the fitted instance's
    surface and annotation points (unused when the fit failed)."""
    g = check_gauge(gauge) if gauge is not None else default_gauge(level)
    if not converged or bone is None or annotations is None:
        return VertebraPlan(level, "failed", fit_reason, g, [], "not planned: the fit failed; check the landmarks "
                            "and masks of this level, or re-acquire the views")  # fmt: skip
    plans = [assess(bone, c, projections, margin_mm) for c in cannulas_from_annotations(annotations, g)]
    for p in plans:
        p.suggestion = cannula_suggestion(bone, p, projections, margin_mm)
    status, suggestion = vertebra_verdict(level, [(p.cannula.side, p.safe, p.suggestion) for p in plans])
    return VertebraPlan(level, status, fit_reason, g, plans, suggestion)


def cannula_suggestion(
    bone: Bone, p: CannulaPlan, projections: list[Projection] | None, margin_mm: float
) -> str | None:
    """What to do about an unsafe cannula: a thinner gauge that passes (for a breach or too little
    clearance), or a changed aim (for the fluoroscopic rule); None when safe or nothing helps."""
    if p.safe:
        return None
    if any(r.startswith(("breach", "clearance")) for r in p.reasons):
        for thinner in smaller_gauges(p.cannula.gauge):
            alt = assess(bone, p.cannula.with_gauge(thinner), projections, margin_mm)
            if alt.safe:
                return f"a {thinner} G cannula passes (clearance {alt.check.clearance_mm:.1f} mm)"
    elif p.fluoro is not None and p.fluoro.ok is False:
        return "enter more laterally or aim less medially; confirm the posterior wall on the lateral view"
    return None


def vertebra_verdict(level: str, cannulas: list[tuple[str, bool, str | None]]) -> tuple[str, str | None]:
    """("go" | "no-go", suggestion) of a fitted vertebra from its cannulas' (side, safe, suggestion)."""
    safe = [side for side, ok, _ in cannulas if ok]
    if len(safe) == 2:
        return "go", None
    if len(safe) == 1:
        return "no-go", (f"unipedicular from the {safe[0]} side (aim ~20-25 deg medially to reach the midline; "
                         "re-plan that path)")  # fmt: skip
    if sum(1 for _, _, s in cannulas if s and " G cannula passes" in s) == 2:
        return "no-go", "use the thinner cannula named on each side"
    if is_thoracic(level):
        return "no-go", "consider a costotransverse (extrapedicular) route"
    return "no-go", "no safe transpedicular path at this gauge: review on a CT"
