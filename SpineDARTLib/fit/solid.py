"""A shape model as the fit draws it: the solid's Gaussians and the annotation points, in torch.

The model's interior sample points (a 1.5 mm grid with cortical/cancellous densities, moving
linearly with the shape coefficients) become isotropic Gaussians of σ = 0.6 × spacing and mass =
density × cell volume (see :mod:`..render.gaussians`). For the coarse stages of a fit the points
are merged into larger cells (mass-weighted means of the points in each cell, masses summed): the
merged points are still linear in the coefficients, so one code path draws every level of detail.
"""

from __future__ import annotations

import numpy as np
import torch

from ..render.gaussians import SIGMA_PER_SPACING
from ..render.pose import rotation_matrix
from ..ssm.model import ShapeModel

LANDMARK_COUNT = 10  # the first annotations are the 10 landmarks; the trajectory points follow


class Solid:
    """Torch views of one model's render points (optionally merged into ``cell_mm`` cells) and its
    annotation points; :meth:`place` gives both for coefficients and a pose."""

    def __init__(
        self, model: ShapeModel, cell_mm: float | None = None, dtype: torch.dtype = torch.float32, device=None
    ) -> None:
        spacing = float(model.card.get("interior_spacing_mm", 1.5))
        sl = model.interior_slice
        mean, modes = model.mean[sl], model.modes[:, sl]
        mass = np.asarray(model.interior_density, float) * spacing**3
        if len(mean) == 0:
            raise ValueError("the shape model carries no interior points to render")
        if cell_mm is not None and cell_mm > spacing:
            cells = np.floor((mean - mean.min(0)) / cell_mm).astype(np.int64)
            _, group = np.unique(cells, axis=0, return_inverse=True)
            group = group.ravel()
            n = int(group.max()) + 1
            total = np.bincount(group, mass, n)
            keep = total > 0
            w = mass / np.where(total > 0, total, 1.0)[group]  # mass-weighted average per cell

            def merge(x: np.ndarray) -> np.ndarray:  # (..., N, 3) -> (..., n, 3)
                out = np.zeros((*x.shape[:-2], n, 3))
                np.add.at(out, (..., group, slice(None)), x * w[:, None])
                return out[..., keep, :]

            mean, modes, mass = merge(mean), merge(modes), total[keep]
            spacing = float(cell_mm)
        self.model = model
        self.spacing_mm = spacing
        self.variance = (SIGMA_PER_SPACING * spacing) ** 2
        kw = {"dtype": dtype, "device": device}
        std = torch.as_tensor(model.std, **kw)
        self.mean = torch.as_tensor(mean, **kw)
        self.modes = torch.as_tensor(modes, **kw) * std[:, None, None]  # mm per σ
        self.mass = torch.as_tensor(mass, **kw)
        an = model.annotation_slice
        self.ann_mean = torch.as_tensor(model.mean[an], **kw)
        self.ann_modes = torch.as_tensor(model.modes[:, an], **kw) * std[:, None, None]
        self.centre = torch.as_tensor(model.centre, **kw)

    def __len__(self) -> int:
        return self.mean.shape[0]

    def place(
        self, coeffs: torch.Tensor, rotvec: torch.Tensor, translation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(render points (N, 3), annotation points (A, 3)) in world mm for σ-unit ``coeffs`` and a
        pose (rotation vector about the model's centre, then translation)."""
        R = rotation_matrix(rotvec)
        c = self.centre

        def go(mean: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
            x = mean + torch.tensordot(coeffs, modes, dims=1)
            return (x - c) @ R.T + c + translation

        return go(self.mean, self.modes), go(self.ann_mean, self.ann_modes)
