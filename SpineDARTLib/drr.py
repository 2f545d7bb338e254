"""DRRs of volumes with ``diffdrr``, with the geometry given by our :class:`Projection`.

diffdrr by default reorients the volume (``orientation="AP"``), recentres it and mirrors the
detector's x axis. None of that happens here: rays are built from the Projection itself (source =
the focal spot, targets = each pixel's centre on the detector plane, in RAS mm) and handed to
diffdrr's Siddon ray tracer, with the volume placed by its own IJK→RAS matrix. The image is then
∫ density dl along each ray (density per mm → a line integral), pixel (u, v) at ``image[v, u]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .geometry import Projection


def _rays(projection: Projection, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    targets = projection.point_at_depth(projection.pixel_centers(), projection.detector_distance_mm)
    return torch.as_tensor(projection.source_mm, dtype=dtype), torch.as_tensor(targets, dtype=dtype)


class DiffDRR:
    """diffdrr's Siddon renderer over a fixed volume, for any of our projections.

    ``volume`` is a density (per mm) array indexed (i, j, k) with ``ijk_to_ras`` mapping voxel
    centres to RAS mm. ``render`` can move the volume rigidly (differentiably) by rotating about
    ``center`` and translating, which is how the benchmark takes gradients w.r.t. pose.
    """

    def __init__(
        self,
        volume: np.ndarray,
        ijk_to_ras: np.ndarray,
        dtype=torch.float32,
        renderer: str = "siddon",
        n_points: int | None = None,
    ) -> None:
        from diffdrr.drr import DRR
        from torchio import ScalarImage, Subject

        vol = torch.as_tensor(np.asarray(volume), dtype=dtype)
        affine = np.asarray(ijk_to_ras, dtype=np.float64)
        image = ScalarImage(tensor=vol[None], affine=affine)
        subject = Subject(volume=image, density=image, mask=None, reorient=torch.eye(4), fiducials=None)
        # Detector settings are unused: rays come from our projections, not diffdrr's C-arm model.
        self.drr = DRR(subject, sdd=1000.0, height=8, delx=1.0, renderer=renderer, voxel_shift=0.5)
        # Trilinear: samples evenly spaced between where each ray enters and leaves the volume.
        self.render_kwargs = {} if n_points is None else {"n_points": int(n_points)}
        self.drr._affine = self.drr._affine.to(dtype)
        self.drr._affine_inverse = self.drr._affine_inverse.to(dtype)
        self.dtype = dtype

    def render(
        self,
        projections: Sequence[Projection],
        rotvec: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
        center: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images (V, H, W); with a pose, the volume is moved by x' = R(x − c) + c + t."""
        from .render.pose import rotation_matrix

        images = []
        for p in projections:
            src, tgt = _rays(p, self.dtype)
            if rotvec is not None or translation is not None:
                R = rotation_matrix(rotvec if rotvec is not None else torch.zeros(3, dtype=self.dtype))
                t = translation if translation is not None else torch.zeros(3, dtype=self.dtype)
                c = center if center is not None else torch.zeros(3, dtype=self.dtype)
                # Moving the object by T equals moving the rays by T⁻¹: x = Rᵀ(x' − c − t) + c.
                src = (src - c - t) @ R + c
                tgt = (tgt - c - t) @ R + c
            img = self.drr.render(self.drr.density, src.reshape(1, 1, 3), tgt[None], **self.render_kwargs)
            w, h = p.image_size
            images.append(img.reshape(h, w))
        return torch.stack(images)
