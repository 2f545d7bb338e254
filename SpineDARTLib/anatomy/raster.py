"""Drawing simple solids into a scene's HU grid (isotropic, axis-aligned: ``affine`` = h·I + origin).

Each solid is drawn over the part of the grid inside its bounding box only: a scene is ~30 M voxels
and its ribs, vessels and bones together cover a small fraction of them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def sub_slices(lo_world, hi_world, affine, shape) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Index ranges (i0:i1, j0:j1, k0:k1) of the scene grid inside a world box, and the world
    position of the first voxel."""
    h = affine[0, 0]
    o = affine[:3, 3]
    i0 = np.clip(np.floor((lo_world - o) / h).astype(int), 0, np.array(shape))
    i1 = np.clip(np.ceil((hi_world - o) / h).astype(int) + 1, 0, np.array(shape))
    return tuple(slice(i0[a], i1[a]) for a in range(3)), o + h * i0


def sub_grid(lo_world, hi_world, affine, shape):
    """:func:`sub_slices` and the points of those voxels."""
    sl, start = sub_slices(lo_world, hi_world, affine, shape)
    h = affine[0, 0]
    axes = [start[a] + h * np.arange(sl[a].stop - sl[a].start) for a in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return sl, pts


def ellipsoid_inside(pts: np.ndarray, centre, semi) -> np.ndarray:
    return (((pts - np.asarray(centre)) / np.asarray(semi)) ** 2).sum(1) <= 1.0


def capsule_chain_inside(pts: np.ndarray, path: np.ndarray, radius: float) -> np.ndarray:
    d = np.full(len(pts), np.inf)
    for a, b in zip(path[:-1], path[1:], strict=True):
        ab = b - a
        t = np.clip(((pts - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)  # a zero-length segment: a ball
        d = np.minimum(d, np.linalg.norm(pts - a - t[:, None] * ab, axis=1))
    return d <= radius


def draw_tube(
    hu,
    affine,
    shape,
    path: np.ndarray,
    radius: float,
    value: float,
    where: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Set ``value`` inside a chain of capsules, one segment's bounding box at a time (a rib's
    whole box is ~100× larger than its segments' together). ``where``: only voxels whose current
    HU it accepts (e.g. a vessel only inside the lung)."""
    for a, b in zip(path[:-1], path[1:], strict=True):
        sl, pts = sub_grid(np.minimum(a, b) - radius - 1, np.maximum(a, b) + radius + 1, affine, shape)
        if pts.size == 0:
            continue
        inside = capsule_chain_inside(pts, np.stack([a, b]), radius).reshape(hu[sl].shape)
        if where is not None:
            inside &= where(hu[sl])
        hu[sl][inside] = value


def draw_bone_tube(hu, affine, shape, path: np.ndarray, radius: float, cortical: float, cancellous: float) -> None:
    """A tubular bone: a cortex of ~1.5 mm over a cancellous core (a solid tube of cortical density
    is far too bright where the beam runs along it)."""
    draw_tube(hu, affine, shape, path, radius, cortical)
    if radius > 2.0:
        draw_tube(hu, affine, shape, path, radius - 1.5, cancellous)


def bezier(points: np.ndarray, n: int = 12) -> np.ndarray:
    """``n`` points along the Bézier curve of ``points`` (k×3; de Casteljau): a smooth path
    through a few control points."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    q = np.repeat(np.asarray(points, float)[None], n, axis=0)
    while q.shape[1] > 1:
        q = (1 - t) * q[:, :-1] + t * q[:, 1:]
    return q[:, 0]
