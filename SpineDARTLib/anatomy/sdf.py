"""Signed-distance primitives and smooth Boolean operators (numpy, vectorised over points).

Conventions: ``p`` is (N, 3) in mm; negative inside. Some primitives (ellipsoids, elliptic
sections) return a bound rather than the exact distance; their zero set is exact, which is what the
surface needs, and they stay close to a distance near the surface, which is what the smooth unions
and the partial-volume occupancy need.
"""

from __future__ import annotations

import numpy as np


def sphere(p: np.ndarray, center, radius: float) -> np.ndarray:
    return np.linalg.norm(p - np.asarray(center, float), axis=1) - radius


def ellipsoid(p: np.ndarray, center, radii) -> np.ndarray:
    """Axis-aligned ellipsoid (the k0·(k0 − 1)/k1 bound, exact on the surface)."""
    r = np.asarray(radii, float)
    q = p - np.asarray(center, float)
    k0 = np.linalg.norm(q / r, axis=1)
    k1 = np.linalg.norm(q / (r * r), axis=1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def capsule(p: np.ndarray, a, b, ra: float, rb: float | None = None) -> np.ndarray:
    """Segment a→b swept by a sphere whose radius goes linearly from ``ra`` to ``rb`` (a tapered
    capsule; approximate distance when tapered)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rb = ra if rb is None else rb
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - (ra + (rb - ra) * t)


def elliptic_segment(p: np.ndarray, a, b, semi_u: float, semi_v: float, up=(0.0, 0.0, 1.0), round_mm: float = 1.0):
    """A straight bar from a to b with an elliptic section (semi-axes ``semi_u`` across, ``semi_v``
    along ``up`` projected on the section), flat ends rounded by ``round_mm``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    axis = b - a
    length = np.linalg.norm(axis)
    w = axis / length
    v_dir = np.asarray(up, float) - np.dot(up, w) * w
    v_dir /= np.linalg.norm(v_dir)
    u_dir = np.cross(v_dir, w)
    q = p - (a + b) / 2
    qu, qv, qw = q @ u_dir, q @ v_dir, q @ w
    m = min(semi_u, semi_v)
    d_sec = (np.sqrt((qu / semi_u) ** 2 + (qv / semi_v) ** 2) - 1.0) * m
    d_len = np.abs(qw) - length / 2
    return smooth_intersection(d_sec, d_len, round_mm)


def elliptic_cylinder_z(p: np.ndarray, center_xy, semi_x: float, semi_y: float, tilt_deg: float = 0.0) -> np.ndarray:
    """An infinite elliptic cylinder along z (tilted about x by ``tilt_deg``): the vertebral canal."""
    q = p - np.array([center_xy[0], center_xy[1], 0.0])
    t = np.radians(tilt_deg)
    y = q[:, 1] * np.cos(t) - q[:, 2] * np.sin(t)
    m = min(semi_x, semi_y)
    return (np.sqrt((q[:, 0] / semi_x) ** 2 + (y / semi_y) ** 2) - 1.0) * m


def plane(p: np.ndarray, point, normal) -> np.ndarray:
    """Half-space: negative on the side opposite the (outward) ``normal``."""
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    return (p - np.asarray(point, float)) @ n


def rounded_box(p: np.ndarray, center, half_sizes, rotation: np.ndarray | None = None, radius: float = 1.0):
    """A box (exact distance) with edges rounded by ``radius``; ``rotation`` (3, 3) maps box axes to
    world (columns)."""
    q = p - np.asarray(center, float)
    if rotation is not None:
        q = q @ np.asarray(rotation, float)
    h = np.asarray(half_sizes, float) - radius
    d = np.abs(q) - h
    outside = np.linalg.norm(np.maximum(d, 0.0), axis=1)
    inside = np.minimum(d.max(axis=1), 0.0)
    return outside + inside - radius


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum: a fillet of size ~k where the two surfaces meet."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def smooth_intersection(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    return -smooth_union(-a, -b, k)


def smooth_subtraction(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """``a`` minus ``b`` with a fillet of size ~k."""
    return smooth_intersection(a, -b, k)
