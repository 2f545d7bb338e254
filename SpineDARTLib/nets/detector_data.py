"""Training samples of the annotation network from data-engine cases (``spinedart synth``).

One sample is one view of one case (its clean or its ``-degraded`` image): the image letterboxed
to the network's size and normalised, and per visible vertebra its level, centre (projected BC),
the 10 landmarks (with in-image flags) and its instance mask at the head's grid. Samples are
prepared once into a cache folder (one small ``.npz`` each) so epochs only read them; targets
(heatmaps, offsets) are built per batch from these. Each vertebra also carries its two cannulas'
entry and target points in the view (the 2D-GeoPlan baseline's targets).

Training images are augmented per epoch: contrast and noise, and a random similarity transform
(scale, rotation, shift) applied alike to the image, every point and the masks — the cases are
few and a transformer trained from scratch overfits their framing otherwise — and, when asked
for, overlap clutter (:mod:`.clutter`: other bodies' projections over the view).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..anatomy.landmarks import LANDMARKS
from ..anatomy.levels import LEVELS
from ..atomic import atomic_write_npz
from ..errors import UserError
from .detector import DetectorConfig

CENTRE_SIGMA = 1.5  # cells: heatmap Gaussians of the vertebral centres
LANDMARK_SIGMA = 1.0  # cells: of the landmarks
MIN_MASK_PIXELS = 200  # detector pixels: a vertebra less visible than this is not a target
# The cannula points per vertebra, in this order (side, point of the trajectory).
PATH_POINTS = (("left", "entry"), ("left", "target"), ("right", "entry"), ("right", "target"))
# Geometric augmentation: scale range, rotation (degrees) and shift (fraction of the image).
AUG_SCALE = (0.8, 1.25)
AUG_ROTATION_DEG = 12.0
AUG_SHIFT = 0.1


@dataclass(frozen=True)
class Letterbox:
    """Image pixels (u, v) → network pixels: n = (u + 0.5)·scale − 0.5 + offset."""

    scale: float
    offset: tuple[float, float]

    def to_net(self, uv: np.ndarray) -> np.ndarray:
        return (np.asarray(uv, float) + 0.5) * self.scale - 0.5 + np.asarray(self.offset)

    def to_image(self, n: np.ndarray) -> np.ndarray:
        return (np.asarray(n, float) + 0.5 - np.asarray(self.offset)) / self.scale - 0.5

    def region(self, shape: tuple[int, int]) -> tuple[slice, slice]:
        """The rows and columns of the network's square that an image of ``shape`` (h, w) fills."""
        h, w = shape
        nh, nw = max(1, round(h * self.scale)), max(1, round(w * self.scale))
        oy, ox = int(self.offset[1]), int(self.offset[0])
        return slice(oy, oy + nh), slice(ox, ox + nw)


def normalise(image: np.ndarray) -> np.ndarray:
    """Line integrals → roughly [-0.5, 0.5] whatever their scale and offset (robust percentiles)."""
    x = np.asarray(image, np.float32)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros_like(x)
    lo, mid, hi = np.percentile(finite, [0.5, 50, 99.5])
    x = np.where(np.isfinite(x), x, lo)
    return ((x - mid) / max(float(hi - lo), 1e-6)).astype(np.float32)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Normalise, scale the longer side to ``size`` (area-averaged) and centre it on a square."""
    from skimage.transform import resize

    h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    box = Letterbox(scale, (float((size - nw) // 2), float((size - nh) // 2)))
    small = resize(normalise(image), (nh, nw), order=1, anti_aliasing=scale < 1, preserve_range=True)
    out = np.full((size, size), float(small.min()), np.float32)
    out[box.region((h, w))] = small
    return out, box


def _grid_mask(mask: np.ndarray, box: Letterbox, config: DetectorConfig) -> np.ndarray:
    """A detector-size bool mask → its area fraction per head cell (g×g, uint8 0-255)."""
    from skimage.transform import resize

    g, size = config.grid, config.image_size
    rows, cols = box.region(mask.shape)
    full = np.zeros((size, size), np.float32)
    full[rows, cols] = resize(
        mask.astype(np.float32), (rows.stop - rows.start, cols.stop - cols.start), order=1, anti_aliasing=True,
        preserve_range=True,
    )  # fmt: skip
    cells = full.reshape(g, config.stride, g, config.stride).mean(axis=(1, 3))
    return np.round(np.clip(cells, 0, 1) * 255).astype(np.uint8)


def case_dirs(data: Path) -> list[Path]:
    """Every case folder (one with a case.json of the data engine) under ``data``, sorted."""
    data = Path(data)
    if not data.is_dir():
        raise UserError("is not a folder of data-engine cases", "give the --out folder of spinedart synth", data)
    found = sorted(p.parent for p in data.rglob("case.json"))
    if not found:
        raise UserError("holds no data-engine case (no case.json)", "run spinedart synth --out DIR first", data)
    return found


def is_validation(case_id: str, every: int = 10) -> bool:
    """The held-out split, by a hash of the case id (stable whatever else is in the folder)."""
    return int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16) % every == 0


def prepare_view(case_dir: Path, view: dict, degraded: bool, config: DetectorConfig) -> dict[str, np.ndarray]:
    """One sample's arrays (see the module doc)."""
    from ..synth.case import read_masks
    from ..xray import read_xray

    image_path = case_dir / (view["degraded_image"] if degraded else view["image"])
    xr = read_xray(image_path, case_dir / view["sidecar"])
    x, box = letterbox(xr.image, config.image_size)
    labels = json.loads((case_dir / view["labels"]).read_text())
    masks = read_masks(case_dir / view["masks"])
    levels, centres, points, visible, grid_masks, paths, path_visible = [], [], [], [], [], [], []
    for inst in labels["instances"]:
        lm = inst["landmarks"]
        if inst["mask_pixels"] < MIN_MASK_PIXELS or not lm["BC"]["in_fov"]:
            continue
        levels.append(LEVELS.index(inst["level"]))
        centres.append(box.to_net(lm["BC"]["uv"]))
        points.append(box.to_net([lm[n]["uv"] for n in LANDMARKS]))
        visible.append([bool(lm[n]["in_fov"]) for n in LANDMARKS])
        grid_masks.append(_grid_mask(masks[inst["mask_index"]], box, config))
        traj = inst.get("trajectories") or {}
        pts = [traj.get(side, {}).get(name) for side, name in PATH_POINTS]
        paths.append(box.to_net([p["uv"] if p else (0.0, 0.0) for p in pts]))
        path_visible.append([bool(p and p["in_fov"]) for p in pts])
    k = len(levels)
    g = config.grid
    return {
        "image": x.astype(np.float16),
        "levels": np.asarray(levels, np.int64),
        "centres": np.asarray(centres, np.float32).reshape(k, 2),
        "landmarks": np.asarray(points, np.float32).reshape(k, len(LANDMARKS), 2),
        "visible": np.asarray(visible, bool).reshape(k, len(LANDMARKS)),
        "masks": np.asarray(grid_masks, np.uint8).reshape(k, g, g),
        "paths": np.asarray(paths, np.float32).reshape(k, len(PATH_POINTS), 2),
        "path_visible": np.asarray(path_visible, bool).reshape(k, len(PATH_POINTS)),
        # mm per network pixel at the detector (for errors in mm)
        "mm_per_px": np.float32(float(np.mean(xr.projection.pixel_spacing_mm)) / box.scale),
    }


def prepare(data: Path, config: DetectorConfig, cache: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Cache every view (clean and degraded) of every case under ``data``; (train, validation) files."""
    cache = Path(cache) if cache else Path(data) / f".detector-cache-{config.image_size}"
    cache.mkdir(parents=True, exist_ok=True)
    train, val = [], []
    for case_dir in case_dirs(data):
        case = json.loads((case_dir / "case.json").read_text())
        for view in case["views"]:
            variants = [False] + ([True] if view.get("degraded_image") else [])
            for degraded in variants:
                name = f"{case['case_id']}__{view['name']}{'__degraded' if degraded else ''}.npz"
                path = cache / name
                if not path.exists():
                    atomic_write_npz(path, prepare_view(case_dir, view, degraded, config))
                (val if is_validation(case["case_id"]) else train).append(path)
    return train, val


def load_sample(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _gaussian(g: int, centre: np.ndarray, sigma: float) -> np.ndarray:
    ys, xs = np.mgrid[0:g, 0:g]
    return np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))


def targets(sample: dict[str, np.ndarray], config: DetectorConfig) -> dict[str, np.ndarray]:
    """Dense training targets at the head's grid (cells = network pixels / stride)."""
    g, s = config.grid, float(config.stride)
    n_lm = len(LANDMARKS)
    centre_hm = np.zeros((1, g, g), np.float32)
    lm_hm = np.zeros((n_lm, g, g), np.float32)
    lm_off = np.zeros((2 * n_lm, g, g), np.float32)
    lm_off_w = np.zeros((n_lm, g, g), np.float32)
    k = len(sample["levels"])
    cells = np.zeros((k, 2), np.int64)
    for i in range(k):
        c = sample["centres"][i] / s
        ci = np.clip(np.floor(c + 0.5), 0, g - 1).astype(np.int64)
        cells[i] = ci
        centre_hm[0] = np.maximum(centre_hm[0], _gaussian(g, ci, CENTRE_SIGMA))
        for j in range(n_lm):
            if not sample["visible"][i, j]:
                continue
            p = sample["landmarks"][i, j] / s
            pi = np.floor(p + 0.5).astype(np.int64)
            if not (0 <= pi[0] < g and 0 <= pi[1] < g):
                continue
            lm_hm[j] = np.maximum(lm_hm[j], _gaussian(g, pi, LANDMARK_SIGMA))
            lm_off[2 * j : 2 * j + 2, pi[1], pi[0]] = p - pi
            lm_off_w[j, pi[1], pi[0]] = 1.0
    for hm in (centre_hm, lm_hm):  # exact peaks at the rounded cells
        hm[hm > 0.9999] = 1.0
    return {
        "centre_hm": centre_hm,
        "landmark_hm": lm_hm,
        "landmark_offset": lm_off,
        "landmark_offset_weight": lm_off_w,
        "cells": cells,
    }


def transform_sample(sample: dict[str, np.ndarray], matrix: np.ndarray, config: DetectorConfig) -> dict:
    """The sample seen through the 2×3 similarity ``matrix`` (network pixels → network pixels):
    image resampled, points moved, masks resampled at the head's grid; vertebrae whose centre
    leaves the image are dropped, landmarks that leave it are no longer visible."""
    from scipy.ndimage import affine_transform

    size, g, s = config.image_size, config.grid, float(config.stride)
    a, t = matrix[:, :2], matrix[:, 2]
    inv = np.linalg.inv(a)

    def warp(img: np.ndarray, cval: float, cell: float) -> np.ndarray:
        # A grid of cells of ``cell`` network pixels has its cell centres at cell·q + (cell − 1)/2:
        # in its own coordinates the map is q → a·q + t_q. affine_transform wants the inverse map,
        # output (row, col) → input, hence the swapped axes.
        c0 = np.full(2, (cell - 1) / 2)
        t_q = (t + (a - np.eye(2)) @ c0) / cell
        return affine_transform(img, inv[::-1, ::-1], offset=(-inv @ t_q)[::-1], order=1, mode="constant", cval=cval)

    move = lambda p: p @ a.T + t  # noqa: E731
    out = dict(sample)
    image = sample["image"].astype(np.float32)
    out["image"] = warp(image, float(image.min()), 1.0)
    centres = move(sample["centres"])
    keep = np.all((centres >= 0) & (centres <= size - 1), axis=1)
    out["centres"] = centres[keep]
    out["levels"] = sample["levels"][keep]
    lm = move(sample["landmarks"])[keep]
    inside = np.all((lm >= 0) & (lm <= size - 1), axis=-1)
    out["landmarks"], out["visible"] = lm, sample["visible"][keep] & inside
    if "paths" in sample:
        out["paths"], out["path_visible"] = move(sample["paths"])[keep], sample["path_visible"][keep]
    masks = [warp(m.astype(np.float32), 0.0, s) for m in sample["masks"][keep]]
    out["masks"] = np.clip(np.round(np.asarray(masks, np.float32).reshape(-1, g, g)), 0, 255).astype(np.uint8)
    out["mm_per_px"] = np.float32(float(sample["mm_per_px"]) / np.sqrt(abs(np.linalg.det(a))))
    return out


def random_similarity(rng: np.random.Generator, size: int) -> np.ndarray:
    """A 2×3 similarity about the image centre within the augmentation's ranges."""
    scale = float(np.exp(rng.uniform(*np.log(AUG_SCALE))))
    th = np.deg2rad(rng.uniform(-AUG_ROTATION_DEG, AUG_ROTATION_DEG))
    a = scale * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c = np.full(2, (size - 1) / 2)
    t = c - a @ c + rng.uniform(-AUG_SHIFT, AUG_SHIFT, 2) * size
    return np.concatenate([a, t[:, None]], axis=1)


def check_clutter(clutter: float) -> None:
    if not 0.0 <= clutter <= 1.0:
        raise UserError(f"--clutter {clutter} is not a probability", "give 0 to 1, e.g. 0.3")


class DetectorDataset(torch.utils.data.Dataset):
    """Cached samples → (image tensor, sample arrays, targets); ``augment`` applies a random
    similarity transform and jitters contrast and noise, and lays overlap clutter
    (:mod:`.clutter`) over a ``clutter`` fraction of the images."""

    def __init__(
        self, files: list[Path], config: DetectorConfig, augment: bool = False, seed: int = 0, clutter: float = 0.0
    ) -> None:
        check_clutter(clutter)
        self.files, self.config, self.augment, self.seed, self.clutter = list(files), config, augment, seed, clutter
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        sample = load_sample(self.files[i])
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            sample = transform_sample(sample, random_similarity(rng, self.config.image_size), self.config)
        x = sample["image"].astype(np.float32)
        # Drawn only when asked for, so runs without clutter keep their random streams.
        if self.augment and self.clutter > 0 and rng.random() < self.clutter:
            from .clutter import add_clutter

            x = add_clutter(x, rng)
        if self.augment:
            x = x * rng.uniform(0.7, 1.4) + rng.uniform(-0.2, 0.2)
            x = x + rng.normal(0.0, rng.uniform(0.0, 0.05), size=x.shape).astype(np.float32)
        return torch.from_numpy(x[None].astype(np.float32)), sample, targets(sample, self.config)


def collate(batch):
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch], [b[2] for b in batch]
