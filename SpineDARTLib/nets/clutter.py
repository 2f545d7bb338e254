"""Overlap clutter: a training augmentation that lays the projections of random bodies over a view.

Why: the real chest CT's lateral views hide the vertebrae under the whole chest — both lungs, the
heart, the liver's dome, the shoulders, the table and the air behind the back — so the bone's
contrast is a few per cent of the image's range, while a generated scene's lateral shows crisp
bodies over a nearly uniform torso (BENCHMARKS, detector's fourth run: real-CT lateral recall 0.04).

How: line integrals add, so a body in the beam adds its own projection to the image. A uniform
ellipsoid projects to ``a·sqrt(1 − r²)`` over an ellipse (dense organs, shoulders: a > 0; lungs,
air: a < 0); a slab seen edge-on projects to a band with sharp sides (table, body wall); a density
gradient to a ramp; vessels and bronchi to a fine random texture. These are drawn per sample,
added to the normalised image and the sum is normalised again, as
:func:`.detector_data.normalise` does to any image at inference — which is what shrinks the bone's
share of the range. Labels are untouched: clutter hides, it moves nothing.
"""

from __future__ import annotations

import numpy as np

from .detector_data import normalise

MAX_BODIES = 5
AMPLITUDE = (0.1, 3.0)  # |a| in units of the normalised image's range (log-uniform)
SEMI_AXES = (0.15, 0.9)  # ellipse semi-axes, fraction of the image side (log-uniform)
DENSE_FRACTION = 0.6  # share of bodies denser than the tissue they replace
BAND_WIDTH = (0.02, 0.25)  # slabs' width, fraction of the image side
P_BAND, P_RAMP, P_TEXTURE = 0.4, 0.5, 0.5
TEXTURE_SIGMA_PX = (1.5, 6.0)  # vessels and bronchi in the lungs, bowel content: a smooth random field
TEXTURE_SD = (0.01, 0.08)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _signed(rng: np.random.Generator) -> float:
    return _log_uniform(rng, *AMPLITUDE) * (1.0 if rng.random() < DENSE_FRACTION else -1.0)


def clutter_field(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The summed projection (float32, ``shape``) of 1-``MAX_BODIES`` ellipsoids, maybe a slab, a
    ramp and a texture, in units of a normalised image's range."""
    h, w = shape
    side = float(max(h, w))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(1, MAX_BODIES + 1))):
        c = rng.uniform(-0.2, 1.2, 2) * (w, h)
        a, b = (_log_uniform(rng, *SEMI_AXES) * side for _ in range(2))
        th = rng.uniform(0.0, np.pi)
        dx, dy = xs - c[0], ys - c[1]
        u = (dx * np.cos(th) + dy * np.sin(th)) / a
        v = (-dx * np.sin(th) + dy * np.cos(th)) / b
        field += _signed(rng) * np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None))
    if rng.random() < P_BAND:
        th = rng.uniform(0.0, np.pi)
        d = (xs - w / 2) * np.cos(th) + (ys - h / 2) * np.sin(th) - rng.uniform(-0.5, 0.5) * side
        half = 0.5 * rng.uniform(*BAND_WIDTH) * side
        soft = rng.uniform(0.5, 3.0)  # px: the edges' blur
        field += _signed(rng) * np.clip((half - np.abs(d)) / soft + 0.5, 0.0, 1.0)
    if rng.random() < P_RAMP:
        th = rng.uniform(0.0, 2 * np.pi)
        field += _signed(rng) * ((xs - w / 2) * np.cos(th) + (ys - h / 2) * np.sin(th)) / side
    if rng.random() < P_TEXTURE:
        from scipy.ndimage import gaussian_filter

        noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), rng.uniform(*TEXTURE_SIGMA_PX))
        field += rng.uniform(*TEXTURE_SD) * noise / max(float(noise.std()), 1e-6)
    return field


def add_clutter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` (normalised) with a clutter field added, normalised again. Pixels at the image's
    minimum (a collimator's shadow, letterbox or transform padding) get none: nothing reaches the
    detector there whatever lies in the beam."""
    x = np.asarray(image, np.float32)
    field = clutter_field(x.shape, rng)
    field[x <= float(x.min()) + 1e-4] = 0.0
    return normalise(x + field)
