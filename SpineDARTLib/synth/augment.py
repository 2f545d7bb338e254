"""Image degradations on line-integral DRRs: the protocol's ``-degraded`` variant and domain
randomisation for training data. Everything is drawn from a given ``rng`` (seeded per image) and
returned as a record of what was applied.

``degrade`` (protocol p1): polychromatic-like non-linear mapping, low-frequency scatter, Poisson
noise, unsharp-mask edge enhancement, mild pincushion distortion — each at a random strength.
``randomize`` (training): intensity curve, contrast, blur, noise, collimation, burned-in text,
image-intensifier vignetting and distortion; masks and landmark pixels follow the distortion. (The
detector size is randomised where the views are made: ``protocol_views(detector_mm=...)``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Distortion:
    """Radial distortion about the image centre: a pixel at radius r moves to r(1 + k r²)
    (k > 0 pincushion, k < 0 barrel), r in pixels."""

    k: float
    centre: tuple[float, float]

    @classmethod
    def with_max_shift(cls, shape: tuple[int, int], max_shift_px: float) -> Distortion:
        h, w = shape
        c = ((w - 1) / 2.0, (h - 1) / 2.0)
        r_max = float(np.hypot(*c))
        return cls(max_shift_px / r_max**3, c)

    def forward(self, uv: np.ndarray) -> np.ndarray:
        d = np.asarray(uv, float) - self.centre
        r2 = (d**2).sum(-1, keepdims=True)
        return self.centre + d * (1.0 + self.k * r2)

    def inverse(self, uv: np.ndarray) -> np.ndarray:
        d = np.asarray(uv, float) - self.centre
        x = d.copy()
        for _ in range(8):  # fixed point of x (1 + k |x|²) = d; converges for mild k
            x = d / (1.0 + self.k * (x**2).sum(-1, keepdims=True))
        return self.centre + x

    def warp(self, image: np.ndarray, order: int = 1) -> np.ndarray:
        """The distorted image: each output pixel samples the undistorted image at inverse(uv)."""
        from scipy.ndimage import map_coordinates

        h, w = image.shape
        v, u = np.mgrid[0:h, 0:w].astype(float)
        src = self.inverse(np.stack([u.ravel(), v.ravel()], -1))
        out = map_coordinates(image.astype(np.float32), [src[:, 1], src[:, 0]], order=order, mode="nearest")
        return out.reshape(h, w).astype(image.dtype)


def _to_intensity(p: np.ndarray) -> tuple[np.ndarray, float]:
    g = 4.0 / max(float(p.max()), 1e-6)  # the densest ray keeps ~2 % of the beam
    return np.exp(-g * p), g


def degrade(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """The protocol's ``-degraded`` image, with a seeded random strength (0.3-1) per image."""
    from scipy.ndimage import gaussian_filter

    p = np.asarray(image, np.float64)
    h, w = p.shape
    scale = max(h, w) / 512.0
    s = float(rng.uniform(0.3, 1.0))
    rec: dict[str, Any] = {"strength": round(s, 4)}
    beta = float(rng.uniform(0.0, 0.25) * s)  # beam hardening: dense paths attenuate less than linear
    p = p * (1.0 - beta * p / max(float(p.max()), 1e-6))
    intensity, g = _to_intensity(p)
    sc = float(rng.uniform(0.0, 0.3) * s)
    intensity = intensity + sc * gaussian_filter(intensity, 40.0 * scale)
    n0 = float(np.exp(rng.uniform(np.log(3e3), np.log(3e4))) / s)
    counts = rng.poisson(np.clip(n0 * intensity, 0, None))
    intensity = np.maximum(counts, 1.0) / n0
    p = -np.log(intensity) / g
    a = float(rng.uniform(0.0, 1.0) * s)
    p = p + a * (p - gaussian_filter(p, 2.0 * scale))
    shift = float(rng.uniform(0.0, 2.0) * s * scale)
    dist = Distortion.with_max_shift(p.shape, shift)
    p = dist.warp(p)
    rec.update(
        beam_hardening=round(beta, 4),
        scatter_fraction=round(sc, 4),
        photons_per_pixel=round(n0, 1),
        unsharp_amount=round(a, 4),
        pincushion_max_shift_px=round(shift, 3),
    )
    return p.astype(np.float32), rec


def randomize(
    image: np.ndarray, rng: np.random.Generator, masks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, Distortion, dict[str, Any]]:
    """Domain randomisation for training data. Returns the image, the masks warped by the same
    distortion, the distortion (apply ``forward`` to landmark pixels) and the record."""
    from scipy.ndimage import gaussian_filter

    p = np.asarray(image, np.float64)
    h, w = p.shape
    scale = max(h, w) / 512.0
    pmax = max(float(p.max()), 1e-6)
    rec: dict[str, Any] = {}
    gamma = float(rng.uniform(0.7, 1.4))
    p = pmax * (p / pmax) ** gamma
    contrast, offset = float(rng.uniform(0.7, 1.3)), float(rng.uniform(-0.1, 0.1) * pmax)
    p = contrast * p + offset
    vign = float(rng.uniform(0.0, 0.3))  # image-intensifier fall-off towards the rim
    v, u = np.mgrid[0:h, 0:w].astype(float)
    r2 = ((u - (w - 1) / 2) ** 2 + (v - (h - 1) / 2) ** 2) / (max(h, w) / 2) ** 2
    # Less signal at the rim reads as more attenuation; ~1/4 of the anatomy's range at most.
    p = p - np.log(np.clip(1.0 - vign * np.clip(r2, 0, 1.5) / 1.5, 0.05, 1.0)) * (pmax / 1.5)
    blur = float(rng.uniform(0.0, 1.5) * scale)
    if blur > 0.05:
        p = gaussian_filter(p, blur)
    noise = float(rng.uniform(0.0, 0.03) * pmax)
    p = p + rng.normal(0.0, noise, p.shape)
    k_shift = float(rng.uniform(-2.0, 3.0) * scale)  # barrel to pincushion
    dist = Distortion.with_max_shift(p.shape, k_shift)
    p = dist.warp(p)
    if masks is not None:
        masks = np.stack([dist.warp(m.astype(np.float32), order=0) > 0.5 for m in masks]) if len(masks) else masks
    coll = str(rng.choice(["none", "circle", "rectangle"]))
    blocked = np.zeros((h, w), bool)
    if coll == "circle":
        rad = float(rng.uniform(0.42, 0.5)) * min(h, w)
        blocked = np.hypot(u - (w - 1) / 2, v - (h - 1) / 2) > rad
    elif coll == "rectangle":
        m = (rng.uniform(0.0, 0.12, 4) * np.array([w, w, h, h])).astype(int)
        blocked[:, : m[0]] = blocked[:, w - m[1] :] = True
        blocked[: m[2], :] = blocked[h - m[3] :, :] = True
    p[blocked] = 1.2 * pmax  # collimator leaves: no radiation, as dense as it gets
    text = bool(rng.random() < 0.5)
    if text:
        p = _burn_text(p, rng, 1.3 * pmax)
    rec.update(
        gamma=round(gamma, 4),
        contrast=round(contrast, 4),
        offset=round(offset, 4),
        vignetting=round(vign, 4),
        blur_px=round(blur, 3),
        noise_sd=round(noise, 5),
        distortion_max_shift_px=round(k_shift, 3),
        collimation=coll,
        burned_in_text=text,
    )
    return p.astype(np.float32), masks, dist, rec


def _burn_text(p: np.ndarray, rng: np.random.Generator, value: float) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = p.shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    letters = "ABCDEFGHKLMNPRSTUVWXYZ0123456789:/ "
    for _ in range(int(rng.integers(1, 4))):
        s = "".join(rng.choice(list(letters), size=int(rng.integers(4, 14))))
        draw.text((int(rng.integers(0, max(w - 60, 1))), int(rng.integers(0, max(h - 12, 1)))), s, fill=255)
    ink = np.asarray(canvas) > 0
    out = p.copy()
    out[ink] = value
    return out
