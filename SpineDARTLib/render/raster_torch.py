"""Additive rasterisation of projected Gaussians in pure torch (CPU and CUDA).

X-ray physics: the image is the **sum** of the footprints, order-independent (no sorting, no alpha).

- ``rasterize_patches``: each footprint is evaluated on a square patch of half-width
  R ≥ ``truncation`` · σ_max (σ_max: the footprint's largest standard deviation, px) and added with
  ``index_add``. Footprints are bucketed by R (powers of two) so one large Gaussian does not inflate
  every patch. With the default truncation 3.5σ a patch keeps ≥ 99.7 % of each footprint's mass.
- ``rasterize_separable``: when every footprint is axis-aligned (|correlation| ≤ tol) the image of
  an instance is one GEMM, Gᵥᵀ·diag(a)·Gᵤ, without truncation.
"""

from __future__ import annotations

import math

import torch

from .project import Projected

DEFAULT_TRUNCATION = 3.5
DEFAULT_MAX_RADIUS_PX = 64
DEFAULT_SEPARABLE_TOL = 0.02


def _sigma_max(cov2d: torch.Tensor) -> torch.Tensor:
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    lam = 0.5 * (a + c) + torch.sqrt((0.5 * (a - c)) ** 2 + b * b)
    return torch.sqrt(lam.clamp_min(0.0))


def max_correlation(proj: Projected) -> float:
    """Largest |ρ| of the valid footprints: how far from axis-aligned they are."""
    a, b, c = proj.cov2d[..., 0, 0], proj.cov2d[..., 0, 1], proj.cov2d[..., 1, 1]
    rho = (b / torch.sqrt((a * c).clamp_min(1e-12))).abs()
    rho = torch.where(proj.valid, rho, torch.zeros_like(rho))
    return float(rho.max()) if rho.numel() else 0.0


def rasterize_patches(
    proj: Projected,
    instance: torch.Tensor,
    n_instances: int,
    image_size: tuple[int, int],
    truncation: float = DEFAULT_TRUNCATION,
    max_radius_px: int = DEFAULT_MAX_RADIUS_PX,
) -> torch.Tensor:
    """Per-instance images (V, I, H, W) by truncated-patch splatting.

    Cost is dominated by one exp per patch pixel: the quadratic form is a GEMM of per-Gaussian
    coefficients with a fixed patch basis [dx², dx·dy, dy², dx, dy, 1], and footprints are added into
    a canvas padded by the largest radius, so no per-pixel bounds checks are needed.
    """
    W, H = int(image_size[0]), int(image_size[1])
    V, N = proj.amplitude.shape
    dev, dt = proj.amplitude.device, proj.amplitude.dtype
    with torch.no_grad():
        radius = torch.ceil(truncation * _sigma_max(proj.cov2d)).clamp(1, max_radius_px).to(torch.int64)
        mu = proj.mean2d
        on_image = (
            (mu[..., 0] > -radius - 0.5)
            & (mu[..., 0] < W - 0.5 + radius)
            & (mu[..., 1] > -radius - 0.5)
            & (mu[..., 1] < H - 0.5 + radius)
        )
        keep = proj.valid & on_image & (proj.amplitude != 0)
        radii = torch.unique(radius[keep]).tolist()
    # A kept footprint's centre lies within R of the image and its patch spans R more: pad by 2R.
    pad = 2 * max(radii, default=0) + 1
    Hp, Wp = H + 2 * pad, W + 2 * pad
    canvas = torch.zeros(V * n_instances * Hp * Wp, device=dev, dtype=dt)
    for R in radii:
        v_idx, n_idx = torch.nonzero(keep & (radius == R), as_tuple=True)
        m = proj.mean2d[v_idx, n_idx]  # (K, 2), differentiable
        con = proj.conic[v_idx, n_idx]
        amp = proj.amplitude[v_idx, n_idx]
        with torch.no_grad():
            offs = torch.arange(-R, R + 1, device=dev)
            dy, dx = torch.meshgrid(offs, offs, indexing="ij")
            dx, dy = dx.reshape(-1), dy.reshape(-1)
            basis = torch.stack([dx * dx, dx * dy, dy * dy, dx, dy, torch.ones_like(dx)]).to(dt)  # (6, S)
            centre = torch.round(m).to(torch.int64)
            base = ((v_idx * n_instances + instance[n_idx]) * Hp + centre[:, 1] + pad) * Wp + centre[:, 0] + pad
            flat = base[:, None] + (dy * Wp + dx)[None, :]
        f = m - centre.to(dt)  # sub-pixel offset of the mean from the patch centre
        a, b, c = con[:, 0], con[:, 1], con[:, 2]
        fx, fy = f[:, 0], f[:, 1]
        coef = torch.stack(
            [a, 2 * b, c, -2 * (a * fx + b * fy), -2 * (b * fx + c * fy), a * fx * fx + 2 * b * fx * fy + c * fy * fy],
            dim=1,
        )
        # Clamping q keeps exp() out of float32 denormals (slow on CPUs) in the patch corners.
        val = amp[:, None] * torch.exp(-0.5 * (coef @ basis).clamp_max(80.0))
        canvas = canvas.index_add(0, flat.reshape(-1), val.reshape(-1))
    if not radii:  # nothing visible: keep the (zero) image connected to the inputs' graph
        canvas = canvas + 0.0 * proj.amplitude.sum()
    canvas = canvas.view(V, n_instances, Hp, Wp)
    return canvas[:, :, pad : pad + H, pad : pad + W]


def rasterize_separable(
    proj: Projected, instance: torch.Tensor, n_instances: int, image_size: tuple[int, int]
) -> torch.Tensor:
    """Per-instance images (V, I, H, W) as separable products (axis-aligned footprints only)."""
    W, H = int(image_size[0]), int(image_size[1])
    V, N = proj.amplitude.shape
    dev, dt = proj.amplitude.device, proj.amplitude.dtype
    xs = torch.arange(W, device=dev, dtype=dt)
    ys = torch.arange(H, device=dev, dtype=dt)
    images = []
    for i in range(n_instances):
        sel = torch.nonzero(instance == i, as_tuple=True)[0]
        if sel.numel() == 0:
            images.append(torch.zeros(V, H, W, device=dev, dtype=dt))
            continue
        mu = proj.mean2d[:, sel]  # (V, K, 2)
        var_u = proj.cov2d[:, sel, 0, 0]
        var_v = proj.cov2d[:, sel, 1, 1]
        amp = proj.amplitude[:, sel]
        gu = torch.exp(-0.5 * (xs[None, None, :] - mu[..., :1]) ** 2 / var_u[..., None])  # (V, K, W)
        gv = torch.exp(-0.5 * (ys[None, None, :] - mu[..., 1:]) ** 2 / var_v[..., None])  # (V, K, H)
        images.append(torch.bmm(gv.transpose(1, 2), amp[..., None] * gu))  # (V, H, W)
    return torch.stack(images, dim=1)


def patch_mass_fraction(truncation: float) -> float:
    """Fraction of an isotropic 2D Gaussian's mass inside a square of half-width truncation·σ."""
    return math.erf(truncation / math.sqrt(2)) ** 2
