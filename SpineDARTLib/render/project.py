"""Perspective projection of 3D Gaussians for X-ray (line-integral) splatting.

For a Gaussian of mass m (its integral over space), mean μ and covariance Σ, the X-ray line
integral along the ray through pixel u is, to first order in σ/depth,

    I(u) = m · |det J₂| · N₂(u; μ_u, J Σ Jᵀ),

where J (2×3) is the exact Jacobian of the 3×4 projection at μ (its null space is the ray direction,
so J Σ Jᵀ is the projected marginal covariance) and |det J₂| = sqrt(det(J Jᵀ)) turns the density
per mm² of the plane perpendicular to the ray into a density per pixel². For an isotropic Σ = σ²I
the peak is m / (2πσ²) whatever the depth: the chord integral of the Gaussian through its centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Gaussians closer to the source than this (mm along the principal axis) are dropped: behind the
# focal spot they are not imaged, and very near it their footprint is unbounded.
MIN_DEPTH_MM = 1.0


@dataclass
class Projected:
    mean2d: torch.Tensor  # (V, N, 2) pixels (u, v)
    cov2d: torch.Tensor  # (V, N, 2, 2) pixels²
    amplitude: torch.Tensor  # (V, N) peak value: m·|det J₂| / (2π sqrt(det Σ₂))
    conic: torch.Tensor  # (V, N, 3) inverse covariance (a, b, c): q = a dx² + 2b dx dy + c dy²
    valid: torch.Tensor  # (V, N) bool: in front of the source


def project_gaussians(
    means: torch.Tensor,
    covs: torch.Tensor,
    masses: torch.Tensor,
    P: torch.Tensor,
    blur_px2: float = 0.0,
) -> Projected:
    """Project N Gaussians into V views. ``P`` is (V, 3, 4) (or (3, 4)), any positive scale.

    ``covs`` is (N, 3, 3), or (N,) isotropic variances (σ², mm²) — the solid vertebra models are
    isotropic, and that path avoids N small matrix products per view. ``blur_px2`` adds a detector
    blur (pixel² variance) to every footprint, keeping the mass.
    """
    if P.ndim == 2:
        P = P[None]
    M, p4 = P[:, :, :3], P[:, :, 3]
    # Normalise so the third row gives depth in mm (direction part of unit norm).
    scale = torch.linalg.norm(M[:, 2], dim=-1)
    M = M / scale[:, None, None]
    p4 = p4 / scale[:, None]
    h = torch.einsum("vij,nj->vni", M, means) + p4[:, None, :]  # (V, N, 3)
    w = h[..., 2]
    valid = w > MIN_DEPTH_MM
    w_safe = torch.where(valid, w, torch.ones_like(w))
    uv = h[..., :2] / w_safe[..., None]
    # Exact perspective Jacobian d(u, v)/dX = (M[:2] - uv ⊗ M[2]) / w, one row per image axis.
    ju = (M[:, None, 0, :] - uv[..., 0:1] * M[:, None, 2, :]) / w_safe[..., None]  # (V, N, 3)
    jv = (M[:, None, 1, :] - uv[..., 1:2] * M[:, None, 2, :]) / w_safe[..., None]
    g00, g01, g11 = (ju * ju).sum(-1), (ju * jv).sum(-1), (jv * jv).sum(-1)  # J Jᵀ
    det_jj = (g00 * g11 - g01 * g01).clamp_min(0.0)
    if covs.ndim == 1:
        var = covs[None, :]
        a, b, c = var * g00, var * g01, var * g11
    else:
        su = torch.einsum("vnk,nkl->vnl", ju, covs)  # rows of J Σ
        sv = torch.einsum("vnk,nkl->vnl", jv, covs)
        a, b, c = (su * ju).sum(-1), (su * jv).sum(-1), (sv * jv).sum(-1)
    if blur_px2:
        a, c = a + blur_px2, c + blur_px2
    det2 = (a * c - b * b).clamp_min(1e-12)
    amp = masses[None] * torch.sqrt(det_jj) / (2 * torch.pi * torch.sqrt(det2))
    amp = torch.where(valid, amp, torch.zeros_like(amp))
    cov2 = torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)
    conic = torch.stack([c / det2, -b / det2, a / det2], dim=-1)
    return Projected(uv, cov2, amp, conic, valid)
