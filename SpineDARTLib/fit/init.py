"""Initial pose and shape of one vertebra's model instance from its 2-D evidence in two views.

Primary path (≥ 3 landmarks marked in both views): triangulate them; a similarity Procrustes of the
model's landmarks (at the level's mean shape) onto them gives the first pose and a scale; the
scale is then not thrown away but absorbed by the shape: pose (rigid) and coefficients are refined
alternately by least squares on the landmarks, with a Gaussian prior towards the level's mean
coefficients (ridge, weight = landmark noise² in σ units). Mode 1 is mostly size, so a large
patient gets large coefficients, not a scaled mean.

Backup path (fewer common landmarks, as the paper's "backup landmarks" for arbitrary views): the
two matched 2-D instance centroids are triangulated, the orientation is the patient frame (the
world is patient RAS, and the model is built in the generator's RAS-aligned anatomical frame:
identity), and the shape is the level's mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError
from ..geometry.multiview import triangulate, view_pair_check
from ..geometry.projection import Projection
from ..ssm.model import ShapeModel
from ..ssm.pca import _rigid
from .landmarks2d import VertebraEvidence

LANDMARK_NOISE_MM = 2.0  # prior weight: the landmark error the shape fit should tolerate
MIN_COMMON = 3


@dataclass
class InitResult:
    level: str
    path: str  # "landmarks" | "backup"
    coeffs: np.ndarray  # (K,) σ units
    rotvec: np.ndarray  # rotation about the model's centre
    translation: np.ndarray
    common: list[str]  # landmarks used (both views)
    triangulation_px: dict[str, float]  # RMS reprojection of each triangulated point over the views
    similarity_scale: float | None  # the Procrustes scale (primary path)
    size_ratio: float  # size of the initial instance's landmarks / the level mean's (absorbed scale)
    reprojection_px: float  # RMS over every marked landmark in every view, of the initial instance
    view_angle_deg: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "path": self.path,
            **instance_fields(self.coeffs, self.rotvec, self.translation),
            "common_landmarks": list(self.common),
            "triangulation_rms_px": {k: round(v, 3) for k, v in self.triangulation_px.items()},
            "similarity_scale": None if self.similarity_scale is None else round(self.similarity_scale, 4),
            "size_ratio": round(self.size_ratio, 4),
            "reprojection_rms_px": round(self.reprojection_px, 3),
            "view_angle_deg": round(self.view_angle_deg, 2),
            "warnings": list(self.warnings),
        }


def instance_fields(coeffs: np.ndarray, rotvec: np.ndarray, translation: np.ndarray) -> dict[str, list[float]]:
    """A model instance's shape and pose as JSON lists, rounded far below what matters (1e-4 σ,
    1e-6 rad, 1 µm) so records stay readable and diffable."""

    def r(x: np.ndarray, n: int) -> list[float]:
        return [round(float(v), n) for v in np.ravel(x)]

    return {"coeffs": r(coeffs, 4), "rotvec": r(rotvec, 6), "translation_mm": r(translation, 3)}


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """s, R, t minimising |s R src + t − dst| (Umeyama)."""
    cs, cd = src.mean(0), dst.mean(0)
    a, b = src - cs, dst - cd
    U, S, Vt = np.linalg.svd(a.T @ b)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    s = float(np.trace(np.diag(S) @ D) / max((a**2).sum(), 1e-12))
    return s, R, cd - s * R @ cs


def _pose_about_centre(model: ShapeModel, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rotvec, translation) of the model's pose convention for x ↦ R x + t."""
    from scipy.spatial.transform import Rotation

    c = model.centre
    return Rotation.from_matrix(R).as_rotvec(), t + R @ c - c


def _size(points: np.ndarray) -> float:
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))


def initialise(
    model: ShapeModel,
    level: str,
    projections: list[Projection],
    evidence: list[VertebraEvidence],
    noise_mm: float = LANDMARK_NOISE_MM,
) -> InitResult:
    """The initial instance of ``level`` from two views' evidence (see the module docstring)."""
    if len(projections) != 2 or len(evidence) != 2:
        raise UserError(f"{len(projections)} views given", "give two X-rays of the vertebra (two views)")
    if level not in model.levels:
        raise UserError(f"the shape model does not cover {level}", f"use the model of {level}'s region")
    angle, warn = view_pair_check(*projections)
    warnings = [warn] if warn else []
    b_level = np.asarray(model.level_mean_coeffs.get(level, np.zeros(model.n_modes)), float)
    names = list(model.annotation_names[:10])
    common = [n for n in names if all(n in ev.landmarks for ev in evidence)]
    if len(common) >= MIN_COMMON:
        tri = triangulate(projections, [np.array([ev.landmarks[n] for n in common]) for ev in evidence])
        X = tri.points_mm
        rms = dict(zip(common, (float(x) for x in tri.rms_px), strict=True))
        idx = [names.index(n) for n in common]
        ann = slice(model.n_surface, model.n_surface + model.n_annotations)
        Y0 = model.instance(b_level)[ann][idx]
        s, R, t = _similarity(Y0, X)
        # The landmark block of the (σ-scaled) modes: Y(b) = Y(b_level) + A (b − b_level).
        A = (model.modes[:, ann][:, idx] * model.std[:, None, None]).reshape(model.n_modes, -1).T
        b = b_level.copy()
        lam = noise_mm**2
        for _ in range(20):
            Yb = Y0 + (A @ (b - b_level)).reshape(-1, 3)
            R, t = _rigid(Yb, X)
            target = ((X - t) @ R - Y0).reshape(-1)  # X in the model frame, minus the level mean
            step = np.linalg.solve(A.T @ A + lam * np.eye(model.n_modes), A.T @ target)
            moved = float(np.abs(b - (b_level + step)).max())
            b = b_level + step
            if moved < 1e-4:
                break
        Yb = Y0 + (A @ (b - b_level)).reshape(-1, 3)
        R, t = _rigid(Yb, X)
        rotvec, trans = _pose_about_centre(model, R, t)
        size_ratio = _size(Yb) / _size(Y0)
        path, sim = "landmarks", s
        bad = [f"{k} {v:.1f} px" for k, v in rms.items() if v > 5.0]
        if bad:
            warnings.append("landmarks disagree between the views (triangulation residual " + ", ".join(bad) + ")")
    elif all(ev.centroid is not None for ev in evidence):
        tri = triangulate(projections, [ev.centroid[None, :] for ev in evidence])
        rms = {"centroid": float(tri.rms_px[0])}
        b = b_level.copy()
        solid = model.interior(model.instance(b))
        rotvec = np.zeros(3)
        trans = tri.points_mm[0] - (solid.mean(0) if len(solid) else model.centre)
        warnings.append(f"only {len(common)} landmarks in both views: orientation from the patient frame")
        path, sim, size_ratio, common = "backup", None, 1.0, []
    else:
        marked = [len(ev.landmarks) for ev in evidence]
        raise UserError(
            f"{level}: {len(common)} landmarks are marked in both views (views have {marked[0]} and "
            f"{marked[1]}) and no centroid in both",
            f"mark at least {MIN_COMMON} of the same landmarks in both views, or the vertebra's centre in both",
        )
    inst = model.annotations(model.instance(b, rotvec, trans))
    errs = [
        float(np.linalg.norm(P.project(inst[n][None, :])[0] - uv))
        for P, ev in zip(projections, evidence, strict=True)
        for n, uv in ev.landmarks.items()
    ]
    reproj = float(np.sqrt(np.mean(np.square(errs)))) if errs else float("nan")
    return InitResult(level, path, b, np.asarray(rotvec), np.asarray(trans), common, rms, sim, size_ratio,
                      reproj, angle, warnings)  # fmt: skip
