"""Analytic image terms of the fit (torch, differentiable): gradient correlation, NCC, soft Dice.

Measured on the real CT (``research/rendering-findings.md``): intensity NCC fails against a whole-CT
radiograph (soft tissue and ribs dominate), gradient correlation at full resolution inside a region
of interest stays near the truth; GC is the fit's image term, NCC the paper's baseline.
"""

from __future__ import annotations

import torch


def _ncc(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted normalised cross-correlation of a and b (same shape) under weights w ≥ 0."""
    n = w.sum().clamp_min(1e-6)
    ma, mb = (a * w).sum() / n, (b * w).sum() / n
    da, db = a - ma, b - mb
    cov = (w * da * db).sum()
    va, vb = (w * da * da).sum(), (w * db * db).sum()
    return cov / torch.sqrt(va * vb + 1e-12)


def ncc(rendered: torch.Tensor, image: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """NCC of intensities inside ``roi`` (H, W) weights."""
    return _ncc(rendered, image, roi)


def gradient_correlation(rendered: torch.Tensor, image: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
    """Mean of the NCCs of the horizontal and vertical central differences inside ``roi``: invariant
    to the image's gain and offset, and to smooth backgrounds."""

    def grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[1:-1, 2:] - x[1:-1, :-2], x[2:, 1:-1] - x[:-2, 1:-1]

    gr, gi, w = grads(rendered), grads(image), roi[1:-1, 1:-1]
    return 0.5 * (_ncc(gr[0], gi[0], w) + _ncc(gr[1], gi[1], w))


def soft_dice(prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Dice of a soft silhouette (values in [0, 1]) with a (possibly fractional) mask."""
    return 2 * (prob * mask).sum() / (prob.sum() + mask.sum()).clamp_min(1e-6)
