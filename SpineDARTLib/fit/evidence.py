"""The benchmark's ``gt-noisy`` 2-D evidence (protocol p1): an oracle, always labelled as such.

From a view's ground-truth pixel labels: each landmark with Gaussian noise σ = 2 mm at the detector,
dropped independently with probability 0.2 per view; each instance mask degraded by a smooth random
displacement of its boundary (1.5 mm RMS at the detector), and 10 % of the instance masks missing.
The instance centroid is the degraded mask's centroid (what a detector gives); without a mask, the
projected body centre with the landmark noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .landmarks2d import VertebraEvidence

LANDMARK_SIGMA_MM = 2.0
LANDMARK_DROP = 0.2
MASK_RMS_MM = 1.5
MASK_MISSING = 0.1
MASK_CORRELATION_MM = 10.0  # length scale of the boundary displacement (smooth, not pixel noise)


@dataclass
class NoisyView:
    evidence: dict[str, VertebraEvidence]  # level → landmarks (+ centroid)
    masks: dict[str, np.ndarray | None]  # level → degraded mask, None where missing


def degrade_mask(
    mask: np.ndarray, pixel_mm: float, rng: np.random.Generator, rms_mm: float = MASK_RMS_MM
) -> np.ndarray:
    """Move the boundary of a binary mask along its normal by a smooth random field whose RMS on
    the boundary is ``rms_mm`` (at the detector)."""
    from scipy.ndimage import distance_transform_edt, gaussian_filter

    m = np.asarray(mask, bool)
    if not m.any():
        return m.copy()
    sdf = distance_transform_edt(m) - distance_transform_edt(~m)  # > 0 inside, pixels
    field = gaussian_filter(rng.normal(size=m.shape), MASK_CORRELATION_MM / pixel_mm, mode="wrap")
    edge = np.abs(sdf) <= 1.0
    field *= (rms_mm / pixel_mm) / max(float(np.sqrt(np.mean(field[edge] ** 2))), 1e-12)
    return (sdf - 0.5 + field) > 0


def gt_noisy_view(labels: dict[str, Any], masks: np.ndarray, pixel_mm: float, rng: np.random.Generator) -> NoisyView:
    """The degraded evidence of one view from its ``view-labels`` document and its GT masks."""
    evidence: dict[str, VertebraEvidence] = {}
    out_masks: dict[str, np.ndarray | None] = {}
    sigma_px = LANDMARK_SIGMA_MM / pixel_mm
    for inst in labels["instances"]:
        level = inst["level"]
        ev = VertebraEvidence()
        for name, rec in inst["landmarks"].items():
            keep = rng.uniform() >= LANDMARK_DROP
            noise = rng.normal(0.0, sigma_px, 2)
            if rec["in_fov"] and keep:
                ev.landmarks[name] = np.asarray(rec["uv"], float) + noise
        gt_mask = masks[inst["mask_index"]]
        missing = rng.uniform() < MASK_MISSING
        mask = None if missing or not gt_mask.any() else degrade_mask(gt_mask, pixel_mm, rng)
        if mask is not None and mask.any():
            rows, cols = np.nonzero(mask)
            ev.centroid = np.array([cols.mean(), rows.mean()])
        elif inst["landmarks"]["BC"]["in_fov"]:
            ev.centroid = np.asarray(inst["landmarks"]["BC"]["uv"], float) + rng.normal(0.0, sigma_px, 2)
        evidence[level], out_masks[level] = ev, mask
    return NoisyView(evidence, out_masks)
