"""Fitting a shape model to a vertebra's surface in 3D (points, not images): the floor any
image-based fit can reach, the builder's held-out test and the quality report's measure."""

from __future__ import annotations

import numpy as np

from .build import Member, correspond
from .model import ShapeModel
from .pca import _rigid


def fit_surface(model: ShapeModel, member: Member, n_modes: int | None = None, seed: int = 0) -> np.ndarray:
    """The surface and annotation points (V + A, 3) of the model instance fitted to ``member``'s
    surface, in the member's frame: correspondences by registering the model's mean onto it (the
    builder's own step), a rigid alignment, then least-squares coefficients of the surface points
    alone, so the annotation points are predicted by the model, never copied from the member."""
    sa = slice(0, model.n_surface + model.n_annotations)
    v, _ = correspond(
        model.mean[: model.n_surface], model.faces, model.mean[model.annotation_slice], member,
        np.random.default_rng(seed),
    )  # fmt: skip
    R, t = _rigid(v, model.mean[: model.n_surface])
    coeffs = model.project(v @ R.T + t, n_modes=n_modes, surface_only=True)
    return (model.instance(coeffs)[sa] - t) @ R
