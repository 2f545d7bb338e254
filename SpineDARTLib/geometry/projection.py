"""The one projection type: a 3×4 pinhole matrix with its detector sampling.

Conventions (DESIGN.md §4):
- world = patient RAS, millimetres;
- ``P`` maps homogeneous world points to homogeneous pixels ``(u, v, 1)``: u = column, v = row,
  origin at the **centre** of the top-left pixel;
- ``P`` is scaled so that its third row has a unit-norm direction part and gives a **positive depth**
  (distance from the source along the principal axis, mm) for points between the source and the
  detector. Pixel coordinates do not depend on that sign, but the view direction does.

K/R/t decomposition: ``P = K [R | t]`` with ``R`` a proper rotation whose third row is the view
direction and ``K = [[fu, s, cu], [0, fv, cv], [0, 0, 1]]``, ``fv > 0``. A mirrored read-out (the
radiological display convention: an image seen from the detector side) gives ``fu < 0``; that is a
property of the detector, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg

from ..errors import GeometryError

# Relative tolerance between fu·du and fv·dv: both are the source-detector distance in mm.
_SPACING_TOLERANCE = 0.01


def _as_points(X: np.ndarray, dim: int) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[None, :]
    if X.shape[-1] != dim:
        raise ValueError(f"expected points with {dim} coordinates, got shape {X.shape}")
    return X


@dataclass(frozen=True, eq=False)
class Projection:
    """A calibrated X-ray view: ``P`` (3×4), image size ``(w, h)`` and pixel spacing ``(du, dv)`` mm.

    The pixel spacing is the detector-plane spacing (DICOM ImagerPixelSpacing): together with ``K``
    it fixes the source-to-detector distance.
    """

    P: np.ndarray
    image_size: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    isocenter_mm: np.ndarray | None = None
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        P = np.array(self.P, dtype=float)
        if P.shape != (3, 4):
            raise GeometryError(f"projection matrix has shape {P.shape}, not 3x4", "give P as 3 rows of 4 numbers")
        if not np.all(np.isfinite(P)):
            raise GeometryError("projection matrix contains NaN or infinite values", "recalibrate or correct P")
        # The 3x3 part must be invertible (a finite source) for P to be a pinhole projection.
        sv = np.linalg.svd(P[:, :3], compute_uv=False)
        if sv[-1] <= 1e-9 * sv[0]:
            raise GeometryError("projection matrix is degenerate (rank < 3)", "check the calibration that produced P")
        norm = np.linalg.norm(P[2, :3])
        P = P / norm
        object.__setattr__(self, "P", P)
        P.setflags(write=False)

        try:
            raw = np.asarray(self.image_size, dtype=float).ravel()
        except (TypeError, ValueError):
            raw = np.array([np.nan])
        if raw.size != 2 or not np.all(np.isfinite(raw)) or np.any(raw <= 0) or np.any(raw != np.round(raw)):
            raise GeometryError(f"image_size {self.image_size!r} is not two positive integers", "give [width, height]")
        size = (int(raw[0]), int(raw[1]))
        object.__setattr__(self, "image_size", size)

        try:
            sp = tuple(float(s) for s in np.asarray(self.pixel_spacing_mm, dtype=float).ravel())
        except (TypeError, ValueError):
            sp = (float("nan"),)
        if len(sp) != 2 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise GeometryError(
                f"pixel_spacing_mm {self.pixel_spacing_mm!r} is not two positive numbers",
                "give [du, dv] in mm at the detector",
            )
        object.__setattr__(self, "pixel_spacing_mm", sp)

        if self.isocenter_mm is not None:
            iso = np.asarray(self.isocenter_mm, dtype=float).reshape(-1)
            if iso.shape != (3,) or not np.all(np.isfinite(iso)):
                raise GeometryError("isocenter_mm is not three finite numbers", "give [x, y, z] in RAS mm")
            object.__setattr__(self, "isocenter_mm", iso)

        K = self.K
        fu_mm = abs(K[0, 0]) * sp[0]
        fv_mm = K[1, 1] * sp[1]
        if abs(fu_mm - fv_mm) > _SPACING_TOLERANCE * max(fu_mm, fv_mm):
            raise GeometryError(
                f"pixel spacing {sp} contradicts P: it implies source-detector distances of {fu_mm:.1f} mm (u) and "
                f"{fv_mm:.1f} mm (v)",
                "use the detector-plane spacing (ImagerPixelSpacing) that matches P",
            )

    # --- decomposition ---------------------------------------------------------------------------
    def _decompose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "KRt" not in self._cache:
            M = self.P[:, :3]
            K, R = scipy.linalg.rq(M)
            # Make R's third row the (positive-depth) view direction and fv > 0; let fu carry a mirror.
            signs = np.sign(np.diag(K))
            signs[signs == 0] = 1.0
            D = np.diag(signs)
            K, R = K @ D, D @ R  # now diag(K) > 0
            if np.dot(R[2], M[2]) < 0:  # cannot happen after the sign fix, kept as a guard
                raise GeometryError("projection decomposition failed", "check P")
            if np.linalg.det(R) < 0:
                F = np.diag([-1.0, 1.0, 1.0])
                K, R = K @ F, F @ R
            K = K / K[2, 2]
            t = np.linalg.solve(K, self.P[:, 3])
            self._cache["KRt"] = (K, R, t)
        return self._cache["KRt"]

    @property
    def K(self) -> np.ndarray:
        return self._decompose()[0].copy()

    @property
    def R(self) -> np.ndarray:
        return self._decompose()[1].copy()

    @property
    def t(self) -> np.ndarray:
        return self._decompose()[2].copy()

    @classmethod
    def from_KRt(
        cls,
        K: np.ndarray,
        R: np.ndarray,
        t: np.ndarray,
        image_size: tuple[int, int],
        pixel_spacing_mm: tuple[float, float],
        isocenter_mm: np.ndarray | None = None,
    ) -> Projection:
        P = np.asarray(K, float) @ np.hstack([np.asarray(R, float), np.asarray(t, float).reshape(3, 1)])
        return cls(P, image_size, pixel_spacing_mm, isocenter_mm)

    # --- derived geometry ------------------------------------------------------------------------
    @property
    def source_mm(self) -> np.ndarray:
        """The X-ray focal spot (camera centre) in RAS mm."""
        return -np.linalg.solve(self.P[:, :3], self.P[:, 3])

    @property
    def view_direction(self) -> np.ndarray:
        """Unit vector (RAS) along the principal ray, from the source towards the detector."""
        d = self.P[2, :3]
        return d / np.linalg.norm(d)

    @property
    def principal_point_px(self) -> np.ndarray:
        K = self.K
        return np.array([K[0, 2], K[1, 2]])

    @property
    def detector_distance_mm(self) -> float:
        """Source-to-detector distance (mm) implied by K and the pixel spacing."""
        K = self.K
        return float(0.5 * (abs(K[0, 0]) * self.pixel_spacing_mm[0] + K[1, 1] * self.pixel_spacing_mm[1]))

    @property
    def isocenter_distance_mm(self) -> float | None:
        """Source-to-isocentre distance, when the isocentre is known (C-arm geometry)."""
        if self.isocenter_mm is None:
            return None
        return float(np.linalg.norm(self.isocenter_mm - self.source_mm))

    @property
    def mirrored(self) -> bool:
        """True when the read-out is the mirror image of a camera at the source (fu < 0)."""
        return bool(self.K[0, 0] < 0)

    def detector_axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World position (RAS mm) of pixel (0, 0) on the detector plane and the world vectors of one
        pixel step along u and along v. Assumes zero skew (true for every C-arm model here)."""
        f = self.detector_distance_mm
        origin = self.point_at_depth(np.array([[0.0, 0.0]]), f)[0]
        du = self.point_at_depth(np.array([[1.0, 0.0]]), f)[0] - origin
        dv = self.point_at_depth(np.array([[0.0, 1.0]]), f)[0] - origin
        return origin, du, dv

    # --- mapping points ---------------------------------------------------------------------------
    def pixel_centers(self) -> np.ndarray:
        """(h·w, 2) pixel centres (u, v) in row-major order, so values reshape to ``image[v, u]``."""
        w, h = self.image_size
        uu, vv = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
        return np.stack([uu.ravel(), vv.ravel()], axis=1)

    def project(self, X: np.ndarray, return_depth: bool = False):
        """Project world points (N, 3) to pixels (N, 2); optionally also the depths (N,) in mm."""
        X = _as_points(X, 3)
        h = X @ self.P[:, :3].T + self.P[:, 3]
        uv = h[:, :2] / h[:, 2:3]
        return (uv, h[:, 2]) if return_depth else uv

    def back_project(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays through pixels: (source (3,), unit directions (N, 3) pointing away from the source)."""
        uv = _as_points(uv, 2)
        h = np.hstack([uv, np.ones((len(uv), 1))])
        d = np.linalg.solve(self.P[:, :3], h.T).T
        d *= np.sign(d @ self.P[2, :3])[:, None]
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return self.source_mm, d

    def point_at_depth(self, uv: np.ndarray, depth_mm: float | np.ndarray) -> np.ndarray:
        """World points on the rays through ``uv`` at the given depth along the principal axis."""
        uv = _as_points(uv, 2)
        h = np.hstack([uv, np.ones((len(uv), 1))]) * np.asarray(depth_mm, float).reshape(-1, 1)
        return np.linalg.solve(self.P[:, :3], (h - self.P[:, 3]).T).T

    # --- resampling -------------------------------------------------------------------------------
    def resized(self, new_size: tuple[int, int]) -> Projection:
        """The same view sampled on a ``new_size`` grid over the same detector area.

        With the centre-of-pixel origin, u' = (u + 0.5)·s − 0.5.
        """
        w, h = self.image_size
        nw, nh = int(new_size[0]), int(new_size[1])
        su, sv = nw / w, nh / h
        A = np.array([[su, 0.0, 0.5 * su - 0.5], [0.0, sv, 0.5 * sv - 0.5], [0.0, 0.0, 1.0]])
        du, dv = self.pixel_spacing_mm
        return Projection(A @ self.P, (nw, nh), (du / su, dv / sv), self.isocenter_mm)

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "P": self.P.tolist(),
            "image_size": list(self.image_size),
            "pixel_spacing_mm": list(self.pixel_spacing_mm),
        }
        if self.isocenter_mm is not None:
            d["isocenter_mm"] = self.isocenter_mm.tolist()
        return d

    def summary(self) -> dict[str, Any]:
        """The numbers a user checks first (what ``spinedart inspect --json`` prints)."""
        iso_d = self.isocenter_distance_mm
        return {
            "image_size": list(self.image_size),
            "pixel_spacing_mm": [round(x, 6) for x in self.pixel_spacing_mm],
            "source_mm": [round(float(x), 4) for x in self.source_mm],
            "isocenter_distance_mm": None if iso_d is None else round(iso_d, 4),
            "detector_distance_mm": round(self.detector_distance_mm, 4),
            "principal_point_px": [round(float(x), 4) for x in self.principal_point_px],
            "view_direction": [round(float(x), 6) for x in self.view_direction],
            "mirrored": self.mirrored,
        }

    def reprojection_distance(self, other: Projection, points: np.ndarray) -> float:
        """Largest pixel distance between the two projections of ``points`` (consistency checks)."""
        return float(np.max(np.linalg.norm(self.project(points) - other.project(points), axis=1)))
