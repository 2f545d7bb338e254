"""Imaging geometry: the :class:`Projection` type, C-arm models, multi-view relations."""

from .carm import PATIENT_POSITIONS, CArmGeometry, from_carm, patient_from_table
from .multiview import (
    VIEW_ANGLE_ERROR_DEG,
    VIEW_ANGLE_WARN_DEG,
    Triangulation,
    epipolar_distance,
    fundamental_matrix,
    triangulate,
    view_angle_deg,
    view_pair_check,
)
from .projection import Projection

__all__ = [
    "PATIENT_POSITIONS",
    "VIEW_ANGLE_ERROR_DEG",
    "VIEW_ANGLE_WARN_DEG",
    "CArmGeometry",
    "Projection",
    "Triangulation",
    "epipolar_distance",
    "from_carm",
    "fundamental_matrix",
    "patient_from_table",
    "triangulate",
    "view_angle_deg",
    "view_pair_check",
]
