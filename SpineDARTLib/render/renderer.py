"""One renderer interface, two backends: ``torch`` (default, CPU and CUDA) and ``gsplat`` (CUDA)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .project import project_gaussians
from .raster_layered import DEFAULT_ISO_TOL, layered_eligible, rasterize_layered
from .raster_torch import (
    DEFAULT_MAX_RADIUS_PX,
    DEFAULT_SEPARABLE_TOL,
    DEFAULT_TRUNCATION,
    max_correlation,
    mean_patch_area,
    rasterize_patches,
    rasterize_separable,
)

BACKENDS = ("torch", "gsplat")
MODES = ("auto", "patch", "separable", "layered")


class RenderInputError(UserError):
    """Inputs the renderer cannot draw (non-finite values, degenerate P, nothing to draw)."""


@dataclass
class RenderResult:
    per_instance: torch.Tensor  # (V, I, H, W) line integrals of each instance
    mode: str  # the rasteriser that ran: "patch", "separable" or "layered"

    @property
    def images(self) -> torch.Tensor:
        """(V, H, W): the attenuation image of each view (all instances summed)."""
        return self.per_instance.sum(dim=1)

    def silhouettes(self, kappa: float = 1.0) -> torch.Tensor:
        """(V, I, H, W) soft silhouettes 1 − exp(−κ·∫μ): ~1 where a ray crosses > 1/κ of bone."""
        return 1.0 - torch.exp(-kappa * self.per_instance)


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.isfinite(t).all():
        raise RenderInputError(f"{name} contains NaN or infinite values", f"check the {name} given to the renderer")


class SplatRenderer:
    """Additive X-ray Gaussian splatting (see :mod:`.project` for the physics).

    ``mode``: ``patch`` (truncated patches, any footprint), ``separable`` (one GEMM per instance,
    only for axis-aligned footprints), ``layered`` (bilinear deposit + blur layers, only for
    isotropic footprints: see :mod:`.raster_layered`) or ``auto``: layered where every footprint is
    isotropic within ``iso_tol`` and resolved (a solid model), else separable when every |ρ| ≤
    ``separable_tol`` and footprints are large compared with the image, else patch.
    """

    def __init__(
        self,
        backend: str = "torch",
        mode: str = "auto",
        truncation: float = DEFAULT_TRUNCATION,
        separable_tol: float = DEFAULT_SEPARABLE_TOL,
        max_radius_px: int = DEFAULT_MAX_RADIUS_PX,
        blur_px: float = 0.0,
        iso_tol: float = DEFAULT_ISO_TOL,
    ) -> None:
        if backend not in BACKENDS:
            raise RenderInputError(f"unknown renderer backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
        if mode not in MODES:
            raise RenderInputError(f"unknown render mode {mode!r}", f"use one of {', '.join(MODES)}")
        if backend == "gsplat":
            from .gsplat_backend import require_gsplat

            require_gsplat()
        if not (truncation >= 2.0 and separable_tol >= 0 and max_radius_px >= 1 and blur_px >= 0 and iso_tol >= 0):
            raise RenderInputError("renderer settings out of range", "truncation >= 2, tolerances and radii >= 0")
        self.backend, self.mode = backend, mode
        self.truncation, self.separable_tol, self.max_radius_px = truncation, separable_tol, max_radius_px
        self.blur_px, self.iso_tol = blur_px, iso_tol

    def render(
        self,
        means: torch.Tensor,
        covs: torch.Tensor,
        masses: torch.Tensor,
        P: torch.Tensor,
        image_size: tuple[int, int],
        instance: torch.Tensor | None = None,
        n_instances: int | None = None,
    ) -> RenderResult:
        """Render N Gaussians (``means`` (N,3) mm RAS, ``covs`` (N,3,3), ``masses`` (N,)) into V views
        (``P`` (V,3,4)); ``instance`` (N,) assigns each Gaussian to one of ``n_instances`` objects."""
        if means.ndim != 2 or means.shape[-1] != 3 or means.shape[0] == 0:
            raise RenderInputError(f"means have shape {tuple(means.shape)}", "give a non-empty (N, 3) tensor")
        N = means.shape[0]
        if covs.shape not in ((N, 3, 3), (N,)) or masses.shape != (N,):
            raise RenderInputError(
                "covs/masses do not match means", "give covs (N, 3, 3) or isotropic variances (N,), and masses (N,)"
            )
        if P.ndim == 2:
            P = P[None]
        if P.shape[1:] != (3, 4):
            raise RenderInputError(f"P has shape {tuple(P.shape)}", "give (V, 3, 4) projection matrices")
        for name, t in (("means", means), ("covariances", covs), ("masses", masses), ("projection matrices", P)):
            _check_finite(name, t)
        with torch.no_grad():
            if (masses < 0).any() or (covs.ndim == 1 and (covs <= 0).any()):
                raise RenderInputError("negative masses or non-positive variances", "give densities >= 0, sigma > 0")
            if (torch.linalg.svdvals(P[:, :, :3]).min(dim=-1).values <= 1e-9 * P.abs().amax(dim=(1, 2))).any():
                raise RenderInputError("a projection matrix is degenerate (rank < 3)", "check the view's calibration")
        W, H = int(image_size[0]), int(image_size[1])
        if W <= 0 or H <= 0:
            raise RenderInputError(f"image size {image_size} is empty", "give a positive width and height")
        if instance is None:
            instance = torch.zeros(N, dtype=torch.int64, device=means.device)
            n_instances = 1
        elif n_instances is None:
            n_instances = int(instance.max()) + 1
        if self.backend == "gsplat":
            from .gsplat_backend import render_gsplat

            return render_gsplat(self, means, covs, masses, P, (W, H), instance, n_instances)
        proj = project_gaussians(means, covs, masses, P, blur_px2=self.blur_px**2)
        mode = self.mode
        if mode == "layered" and not layered_eligible(proj, (W, H), self.truncation, self.iso_tol):
            raise RenderInputError(
                "the layered rasteriser needs isotropic footprints (within iso_tol) of at least 0.8 px",
                "use mode 'patch' (or 'auto', which chooses)",
            )
        if mode == "auto" and layered_eligible(proj, (W, H), self.truncation, self.iso_tol):
            mode = "layered"
        if mode == "auto":
            # Measured on 2 cores: one GEMM over the whole image beats patches only when footprints
            # are large (patch area above ~1/16 of the image), e.g. low-resolution previews.
            large = mean_patch_area(proj, self.truncation) > (W * H) / 16
            mode = "separable" if large and max_correlation(proj) <= self.separable_tol else "patch"
        if mode == "layered":
            img = rasterize_layered(proj, instance, n_instances, (W, H), self.truncation)
        elif mode == "separable":
            img = rasterize_separable(proj, instance, n_instances, (W, H))
        else:
            img = rasterize_patches(proj, instance, n_instances, (W, H), self.truncation, self.max_radius_px)
        return RenderResult(img, mode)
