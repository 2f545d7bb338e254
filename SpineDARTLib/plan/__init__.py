"""Cannula plans from fitted vertebrae: gauges, breach grading, clearances, the fluoroscopic rule,
and a go/no-go flag with its reasons and a suggestion."""

from .cannula import GAUGE_OD_MM, Cannula, cannulas_from_annotations, default_gauge
from .planner import SAFETY_MARGIN_MM, CannulaPlan, VertebraPlan, plan_vertebra
from .safety import Bone, CannulaCheck, check_cannula, gr_grade

__all__ = [
    "GAUGE_OD_MM",
    "SAFETY_MARGIN_MM",
    "Bone",
    "Cannula",
    "CannulaCheck",
    "CannulaPlan",
    "VertebraPlan",
    "cannulas_from_annotations",
    "check_cannula",
    "default_gauge",
    "gr_grade",
    "plan_vertebra",
]
