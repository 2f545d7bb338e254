"""PNG overlays for a reviewer: an X-ray with projected outlines, 2-D landmarks and cannulas."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .geometry.projection import Projection

GREEN, RED, YELLOW, CYAN = (40, 210, 60), (235, 40, 30), (250, 210, 40), (60, 200, 240)


@dataclass
class OverlayItem:
    """One vertebra drawn on a view: its outline (a mesh), landmarks (u, v) and cannulas."""

    label: str
    vertices: np.ndarray | None = None  # RAS mm
    faces: np.ndarray | None = None
    landmarks_uv: list[np.ndarray] = field(default_factory=list)
    cannulas: list[tuple[np.ndarray, np.ndarray, bool, float]] = field(default_factory=list)  # entry, target, safe, OD
    failed: bool = False


def _grey(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99.7])
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def silhouette(p: Projection, vertices: np.ndarray, faces: np.ndarray, size: tuple[int, int], k: int):
    """The mesh's projected silhouette as a binary mask at ``k``× the image's resolution."""
    from PIL import Image, ImageDraw

    uv = (p.project(vertices) + 0.5) * k
    mask = Image.new("1", (size[0] * k, size[1] * k), 0)
    draw = ImageDraw.Draw(mask)
    for tri in uv[faces]:
        draw.polygon([tuple(x) for x in tri], fill=1)
    return np.asarray(mask, bool)


def draw_overlay(image: np.ndarray, p: Projection, items: list[OverlayItem], path: Path, title: str = "") -> Path:
    """Write the overlay PNG (2× the image size up to 1024 px), atomically."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import binary_erosion

    h, w = image.shape
    k = max(1, min(2, 1024 // max(h, w)))
    rgb = np.repeat(_grey(image)[:, :, None], 3, axis=2)
    rgb = np.kron(rgb, np.ones((k, k, 1), np.uint8))
    for it in items:
        if it.vertices is None or it.faces is None:
            continue
        sil = silhouette(p, it.vertices, it.faces, (w, h), k)
        edge = sil & ~binary_erosion(sil, iterations=max(1, k))
        rgb[edge] = RED if it.failed else CYAN
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    for it in items:
        for uv in it.landmarks_uv:
            x, y = (np.asarray(uv) + 0.5) * k
            draw.line([x - 4, y, x + 4, y], fill=YELLOW, width=1)
            draw.line([x, y - 4, x, y + 4], fill=YELLOW, width=1)
        for entry, target, safe, od in it.cannulas:
            (x0, y0), (x1, y1) = (p.project(np.stack([entry, target])) + 0.5) * k
            width = max(2, int(round(od / float(np.mean(p.pixel_spacing_mm)) * k * 0.6)))
            draw.line([x0, y0, x1, y1], fill=GREEN if safe else RED, width=width)
            draw.ellipse([x0 - 3, y0 - 3, x0 + 3, y0 + 3], outline=(255, 255, 255))
        if it.vertices is not None:
            uv = (p.project(it.vertices) + 0.5) * k  # the level's name beside its outline
            draw.text((uv[:, 0].max() + 6, uv[:, 1].mean()), it.label + (" FAILED" if it.failed else ""), fill=YELLOW)
    if title:
        draw.text((6, 6), title, fill=(255, 255, 255))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path
