"""Rigid poses in torch: axis-angle rotations and transforms of Gaussians (differentiable)."""

from __future__ import annotations

import torch


def rotation_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula for (..., 3) rotation vectors (radians), smooth through zero."""
    theta2 = (rotvec * rotvec).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    # sin(θ)/θ and (1 - cos θ)/θ², with their Taylor series near zero.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2_safe)
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def transform_gaussians(
    means: torch.Tensor,
    covs: torch.Tensor,
    rotvec: torch.Tensor,
    translation: torch.Tensor,
    center: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x' = R (x − c) + c + t, Σ' = R Σ Rᵀ (rotation about ``center``, default the origin).

    Isotropic variances (``covs`` of shape (N,)) are unchanged by a rotation."""
    R = rotation_matrix(rotvec)
    c = torch.zeros(3, dtype=means.dtype, device=means.device) if center is None else center
    new_means = (means - c) @ R.T + c + translation
    new_covs = covs if covs.ndim == 1 else R @ covs @ R.T
    return new_means, new_covs
