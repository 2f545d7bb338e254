"""From members in correspondence to a :class:`ShapeModel`: rigid generalised Procrustes (no scale:
size is a shape mode here), PCA, interior sample points carried by the surface modes, per-level
mean coefficients."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from .model import ShapeModel, interior_modes


def _rigid(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and translation t minimising |R src + t − dst| (Kabsch, no reflection, no scale)."""
    cs, cd = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    return R, cd - R @ cs


def rigid_gpa(members: np.ndarray, iterations: int = 10, tol_mm: float = 1e-4) -> np.ndarray:
    """Members (M, N, 3) aligned rigidly to their evolving mean (the first member's frame)."""
    x = np.array(members, dtype=np.float64)
    mean = x[0].copy()
    for _ in range(iterations):
        for i in range(len(x)):
            R, t = _rigid(x[i], mean)
            x[i] = x[i] @ R.T + t
        new = x.mean(0)
        R, t = _rigid(new, x[0])  # keep the mean in the first member's frame (no drift)
        new = new @ R.T + t
        moved = float(np.abs(new - mean).max())
        mean = new
        if moved < tol_mm:
            break
    return x


def pca_model(
    members: np.ndarray,
    faces: np.ndarray,
    part_labels: np.ndarray,
    n_surface: int,
    annotation_names: Sequence[str],
    member_levels: Sequence[str],
    n_modes: int,
    interior_spacing_mm: float = 1.5,
    card: dict | None = None,
    reference: np.ndarray | None = None,
) -> ShapeModel:
    """PCA of members (M, V + A, 3) whose rows correspond (surface vertices, then annotations).
    With ``reference`` (V + A, 3), the model is placed rigidly onto it (e.g. the template's
    anatomical frame); otherwise it stays in the first member's frame."""
    from ..render.gaussians import interior_points

    x = np.asarray(members, np.float64)
    m = len(x)
    if x.ndim != 3 or x.shape[1] != n_surface + len(annotation_names) or x.shape[2] != 3:
        raise UserError("members are not (M, surface + annotations, 3) point sets", "rebuild the correspondences")
    if not 1 <= n_modes <= m - 1:
        raise UserError(
            f"{m} members cannot give {n_modes} modes", f"give at least {n_modes + 1} members, or ask for fewer modes"
        )
    if len(member_levels) != m:
        raise UserError("one level per member is needed", "give the members' levels")
    aligned = rigid_gpa(x)
    if reference is not None:
        R, t = _rigid(aligned.mean(0), np.asarray(reference, np.float64))
        aligned = aligned @ R.T + t
    mean = aligned.mean(0)
    dev = (aligned - mean).reshape(m, -1)
    _, s, vt = np.linalg.svd(dev, full_matrices=False)
    std = s[:n_modes] / np.sqrt(m - 1)
    modes = vt[:n_modes].reshape(n_modes, -1, 3)
    coeffs = dev @ vt[:n_modes].T / std  # (M, K) in σ units
    total = float((s**2).sum())
    explained = np.cumsum(s[:n_modes] ** 2) / total if total > 0 else np.ones(n_modes)
    surface_mean = mean[:n_surface]
    pts, dens = interior_points(surface_mean, faces, interior_spacing_mm)
    inner_modes = interior_modes(surface_mean, modes[:, :n_surface], pts)
    from ..anatomy.levels import LEVELS

    # Cranial to caudal (levels outside the table, if any, after them in order of appearance).
    levels = tuple(sorted(set(member_levels), key=lambda lv: (LEVELS.index(lv) if lv in LEVELS else 99, lv)))
    level_means = {lv: coeffs[[i for i, ml in enumerate(member_levels) if ml == lv]].mean(0) for lv in levels}
    c = dict(card or {})
    c.update(
        n_members=m,
        n_modes=n_modes,
        variance_explained_cumulative=[round(float(v), 6) for v in explained],
        interior_spacing_mm=interior_spacing_mm,
    )
    return ShapeModel(
        mean=np.vstack([mean, pts]),
        modes=np.concatenate([modes, inner_modes], axis=1),
        std=std,
        faces=np.asarray(faces, np.int64),
        part_labels=np.asarray(part_labels),
        n_surface=n_surface,
        annotation_names=tuple(annotation_names),
        interior_density=dens,
        levels=levels,
        level_mean_coeffs=level_means,
        card=c,
    )
