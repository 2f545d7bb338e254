"""Geometry of two or more views: DLT triangulation, epipolar distance, the angle between views."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import GeometryError
from .projection import Projection

# Two views closer than this cannot constrain depth reliably (DESIGN: warning / error thresholds).
VIEW_ANGLE_WARN_DEG = 15.0
VIEW_ANGLE_ERROR_DEG = 5.0


@dataclass(frozen=True)
class Triangulation:
    points_mm: np.ndarray  # (N, 3) RAS
    reprojection_px: np.ndarray  # (N, V) pixel error per point and view (NaN where not observed)
    n_views: np.ndarray  # (N,) number of views used per point

    @property
    def rms_px(self) -> np.ndarray:
        return np.sqrt(np.nanmean(self.reprojection_px**2, axis=1))


def _normalising_transform(uv: np.ndarray) -> np.ndarray:
    """Hartley normalisation: centre and scale image points for a well-conditioned DLT."""
    c = uv.mean(axis=0)
    s = np.sqrt(2.0) / max(np.mean(np.linalg.norm(uv - c, axis=1)), 1e-9)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def triangulate(projections: Sequence[Projection], points_px: Sequence[np.ndarray]) -> Triangulation:
    """Linear (DLT) triangulation of N points seen in V ≥ 2 views.

    ``points_px[v]`` is (N, 2) with NaN rows for points not seen in view v; each point needs at least
    two views. Rows of each view's equations are normalised so every view weighs the same.
    """
    if len(projections) != len(points_px):
        raise ValueError("one array of image points per projection")
    if len(projections) < 2:
        raise GeometryError("triangulation needs at least two views", "give a second X-ray")
    obs = [np.asarray(p, float).reshape(-1, 2) for p in points_px]
    n = obs[0].shape[0]
    if any(o.shape[0] != n for o in obs):
        raise ValueError("every view must list the same points (use NaN for unseen)")
    X = np.full((n, 3), np.nan)
    used = np.zeros(n, dtype=int)
    for i in range(n):
        rows = []
        for P, o in zip(projections, obs, strict=True):
            if not np.all(np.isfinite(o[i])):
                continue
            # Scale rows by depth-independent normalisation of P for conditioning.
            Pn = P.P / np.linalg.norm(P.P[:2, :3])
            u, v = o[i]
            for r in (u * Pn[2] - Pn[0], v * Pn[2] - Pn[1]):
                rows.append(r / np.linalg.norm(r[:3]))
        used[i] = len(rows) // 2
        if used[i] < 2:
            continue
        _, _, vt = np.linalg.svd(np.asarray(rows))
        h = vt[-1]
        X[i] = h[:3] / h[3]
    err = np.full((n, len(projections)), np.nan)
    ok = np.isfinite(X[:, 0])
    for v, (P, o) in enumerate(zip(projections, obs, strict=True)):
        if ok.any():
            e = np.linalg.norm(P.project(X[ok]) - o[ok], axis=1)
            err[ok, v] = e
    return Triangulation(X, err, used)


def fundamental_matrix(a: Projection, b: Projection) -> np.ndarray:
    """F such that x_b^T F x_a = 0 for corresponding pixels (homogeneous)."""
    C = np.append(a.source_mm, 1.0)
    e_b = b.P @ C
    ex = np.array([[0, -e_b[2], e_b[1]], [e_b[2], 0, -e_b[0]], [-e_b[1], e_b[0], 0]])
    return ex @ b.P @ np.linalg.pinv(a.P)


def epipolar_distance(a: Projection, b: Projection, uv_a: np.ndarray, uv_b: np.ndarray) -> np.ndarray:
    """Distance (px) of each point in view b from the epipolar line of its partner in view a."""
    uv_a = np.asarray(uv_a, float).reshape(-1, 2)
    uv_b = np.asarray(uv_b, float).reshape(-1, 2)
    F = fundamental_matrix(a, b)
    ha = np.hstack([uv_a, np.ones((len(uv_a), 1))])
    hb = np.hstack([uv_b, np.ones((len(uv_b), 1))])
    lines = ha @ F.T  # l_b = F x_a
    return np.abs(np.sum(lines * hb, axis=1)) / np.linalg.norm(lines[:, :2], axis=1)


def view_angle_deg(a: Projection, b: Projection) -> float:
    """Angle between the two principal rays, in [0, 90]: 0 = same or opposite direction."""
    c = abs(float(np.dot(a.view_direction, b.view_direction)))
    return float(np.degrees(np.arccos(np.clip(c, 0.0, 1.0))))


def view_pair_check(a: Projection, b: Projection) -> tuple[float, str | None]:
    """The angle between two views and a warning when it is small; an error when it is useless."""
    ang = view_angle_deg(a, b)
    if ang < VIEW_ANGLE_ERROR_DEG:
        raise GeometryError(
            f"the two views are only {ang:.1f} deg apart, too close to recover depth",
            f"acquire the second view at least {VIEW_ANGLE_WARN_DEG:.0f} deg (ideally ~90 deg) from the first",
        )
    if ang < VIEW_ANGLE_WARN_DEG:
        return ang, (
            f"the two views are {ang:.1f} deg apart (< {VIEW_ANGLE_WARN_DEG:.0f} deg): depth will be poorly "
            "constrained; a second view near 90 deg is better"
        )
    return ang, None
