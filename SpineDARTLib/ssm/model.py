"""The statistical shape model: a point distribution model in millimetres, size kept.

One stacked point set per model, in this order: the surface vertices (with faces and a part label
each), the annotation points (the 10 landmarks and the left/right entry and target points computed
on every member by the ground-truth rules, so they deform exactly and linearly with the
coefficients), and the renderer's interior sample points (with a density each; their modes are
carried from the surface modes, see :func:`interior_modes`). An instance is

    x(b, pose) = R · (mean + Σ_k b_k σ_k mode_k − c) + c + t,

with b in units of standard deviations, R a rotation vector about the model's centre c. Members are
aligned rigidly only: mode 1 is mostly size, because there is no other place for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..anatomy.landmarks import LANDMARKS
from ..errors import UserError

ANNOTATIONS = (*LANDMARKS, "left_entry", "left_target", "right_entry", "right_target")


def annotation_array(landmarks: dict, trajectories: dict) -> np.ndarray:
    """The annotation points (A, 3) in :data:`ANNOTATIONS` order, from the landmark and trajectory
    dictionaries of an annotation (``vertebra.json``, ``case.json`` or an ``Annotation``)."""
    rows = [landmarks[k] for k in ANNOTATIONS[:10]]
    rows += [trajectories[side][point] for side in ("left", "right") for point in ("entry", "target")]
    a = np.asarray(rows, dtype=np.float64)
    if a.shape != (len(ANNOTATIONS), 3) or not np.all(np.isfinite(a)):
        raise ValueError("annotation points are incomplete or not finite")
    return a


@dataclass
class ShapeModel:
    mean: np.ndarray  # (N, 3) mm: surface | annotations | interior
    modes: np.ndarray  # (K, N, 3), orthonormal over the surface+annotation block
    std: np.ndarray  # (K,) mm, per-mode standard deviation
    faces: np.ndarray  # (F, 3) into the surface block
    part_labels: np.ndarray  # (V,)
    n_surface: int
    annotation_names: tuple[str, ...]
    interior_density: np.ndarray  # (I,)
    levels: tuple[str, ...]
    level_mean_coeffs: dict[str, np.ndarray] = field(default_factory=dict)  # level → (K,) in σ units
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float64)
        self.modes = np.asarray(self.modes, np.float64)
        self.std = np.asarray(self.std, np.float64)
        n = self.mean.shape[0]
        k = len(self.std)
        if self.mean.shape != (n, 3) or self.modes.shape != (k, n, 3):
            raise UserError("shape model arrays disagree (mean, modes, std)", "rebuild the model")
        if self.n_surface + len(self.annotation_names) + len(self.interior_density) != n:
            raise UserError("shape model point blocks do not add up", "rebuild the model")
        if len(self.part_labels) != self.n_surface or (len(self.faces) and self.faces.max() >= self.n_surface):
            raise UserError("shape model faces or part labels do not match its surface", "rebuild the model")

    # --- blocks -----------------------------------------------------------------------------------
    @property
    def n_modes(self) -> int:
        return len(self.std)

    @property
    def n_annotations(self) -> int:
        return len(self.annotation_names)

    @property
    def surface_slice(self) -> slice:
        return slice(0, self.n_surface)

    @property
    def annotation_slice(self) -> slice:
        return slice(self.n_surface, self.n_surface + self.n_annotations)

    @property
    def interior_slice(self) -> slice:
        return slice(self.n_surface + self.n_annotations, self.mean.shape[0])

    @property
    def centre(self) -> np.ndarray:
        """Rotation centre of a pose: the mean surface's centroid."""
        return self.mean[self.surface_slice].mean(0)

    def _check_coeffs(self, coeffs) -> np.ndarray:
        b = np.zeros(self.n_modes) if coeffs is None else np.asarray(coeffs, np.float64)
        if b.shape != (self.n_modes,) and not (b.ndim == 1 and len(b) <= self.n_modes):
            raise UserError(f"{b.shape} coefficients for a {self.n_modes}-mode model", "give one per mode (or fewer)")
        if not np.all(np.isfinite(b)):
            raise UserError("shape coefficients are not finite", "give finite coefficients")
        return np.pad(b, (0, self.n_modes - len(b)))

    # --- instances --------------------------------------------------------------------------------
    def instance(self, coeffs=None, rotvec=None, translation=None) -> np.ndarray:
        """All points (N, 3) of the instance with ``coeffs`` (σ units; fewer than K: the rest 0)
        and an optional rigid pose (rotation vector about :attr:`centre`, then translation)."""
        from scipy.spatial.transform import Rotation

        b = self._check_coeffs(coeffs)
        x = self.mean + np.tensordot(b * self.std, self.modes, axes=1)
        if rotvec is not None:
            c = self.centre
            x = (x - c) @ Rotation.from_rotvec(np.asarray(rotvec, float)).as_matrix().T + c
        if translation is not None:
            x = x + np.asarray(translation, float)
        return x

    def instance_torch(self, coeffs, rotvec=None, translation=None):
        """The same in torch, differentiable in coefficients and pose (float64 unless the
        coefficients come in another dtype)."""
        import torch

        from ..render.pose import rotation_matrix

        coeffs = torch.as_tensor(coeffs)
        dtype = coeffs.dtype if coeffs.is_floating_point() else torch.float64
        b = torch.zeros(self.n_modes, dtype=dtype)
        b = b.index_add(0, torch.arange(coeffs.shape[0]), coeffs.to(dtype))
        mean = torch.as_tensor(self.mean, dtype=dtype)
        modes = torch.as_tensor(self.modes, dtype=dtype)
        std = torch.as_tensor(self.std, dtype=dtype)
        x = mean + torch.tensordot(b * std, modes, dims=1)
        if rotvec is not None:
            c = torch.as_tensor(self.centre, dtype=dtype)
            x = (x - c) @ rotation_matrix(torch.as_tensor(rotvec, dtype=dtype)).T + c
        if translation is not None:
            x = x + torch.as_tensor(translation, dtype=dtype)
        return x

    def surface(self, points: np.ndarray) -> np.ndarray:
        return points[self.surface_slice]

    def annotations(self, points: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.annotation_names, points[self.annotation_slice], strict=True))

    def interior(self, points: np.ndarray) -> np.ndarray:
        return points[self.interior_slice]

    def project(self, points: np.ndarray, n_modes: int | None = None, surface_only: bool = False) -> np.ndarray:
        """Least-squares coefficients (σ units) of a point set in correspondence with the model,
        with no pose (the model's own frame): from the surface and annotation points, or from the
        surface alone (``surface_only``: the annotations are then predicted, not given)."""
        k = self.n_modes if n_modes is None else int(n_modes)
        sa = slice(0, self.n_surface) if surface_only else slice(0, self.n_surface + self.n_annotations)
        A = (self.modes[:k, sa] * self.std[:k, None, None]).reshape(k, -1).T
        r = (np.asarray(points, float)[sa] - self.mean[sa]).reshape(-1)
        b, *_ = np.linalg.lstsq(A, r, rcond=None)
        return np.pad(b, (0, self.n_modes - k))


def interior_modes(
    surface_mean: np.ndarray, surface_modes: np.ndarray, interior: np.ndarray, k_neighbours: int = 8
) -> np.ndarray:
    """Mode displacements (K, I, 3) of interior points, carried from the surface: each interior
    point moves as the inverse-distance-weighted mean of its k nearest mean-surface vertices, so
    the interior follows the surface linearly in the coefficients."""
    from scipy.spatial import cKDTree

    d, idx = cKDTree(surface_mean).query(interior, k=k_neighbours)
    w = 1.0 / np.maximum(d, 1e-6) ** 2
    w /= w.sum(1, keepdims=True)
    return np.einsum("ij,kijd->kid", w, surface_modes[:, idx, :])
