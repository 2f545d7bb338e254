"""Training crops of the refiner (:mod:`.refiner`) from data-engine cases (``spinedart synth``).

Each view (clean and degraded image) is cached once: its line-integral image, pixel spacing, and
per visible vertebra its 10 landmarks (image pixels, in-image flags) and its mask (bit-packed). A
sample is one vertebra of one view; its crop is cut per draw, centred on the true body centre moved
by up to ``JITTER_MM`` (the first stage's centre error) and, for training, rotated and scaled a
little. A crop is normalised on its own (robust percentiles), as at inference, so the rest of the
image does not change it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..anatomy.landmarks import LANDMARKS
from ..anatomy.levels import LEVELS
from ..atomic import atomic_write_npz
from .detector_data import MIN_MASK_PIXELS, case_dirs, is_validation, normalise
from .refiner import RefinerConfig

JITTER_MM = 12.0  # at the detector: the crop's centre is the true centre moved up to this far
AUG_ROTATION_DEG = 10.0
AUG_SCALE = (0.9, 1.1)
CACHE_VERSION = 1


def crop_matrix(
    centre_uv: np.ndarray, image_mm_per_px: float, config: RefinerConfig, rotation_deg: float = 0.0, scale: float = 1.0
) -> np.ndarray:
    """2×3 map from crop pixels (u, v) to image pixels (u, v): the crop's centre at ``centre_uv``,
    ``config.mm_per_px × scale`` mm per crop pixel, turned by ``rotation_deg``."""
    th = np.deg2rad(rotation_deg)
    a = (config.mm_per_px * scale / image_mm_per_px) * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c0 = np.full(2, (config.crop_px - 1) / 2)
    return np.concatenate([a, (np.asarray(centre_uv, float) - a @ c0)[:, None]], axis=1)


def to_crop(matrix: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Image pixels → crop pixels (the inverse of ``matrix``)."""
    a, t = matrix[:, :2], matrix[:, 2]
    return (np.asarray(uv, float) - t) @ np.linalg.inv(a).T


def lowpass(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``image`` (float32) as crops through ``matrix`` should sample it: where a crop pixel spans
    several image pixels, low-passed so the crop does not alias. Depends on the matrix's scale
    only: crops of one scale share it."""
    from scipy.ndimage import gaussian_filter

    step = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    img = np.asarray(image, np.float32)
    return gaussian_filter(img, 0.4 * step) if step > 1.2 else img


def cut(image: np.ndarray, matrix: np.ndarray, n: int, edge: bool = True, filtered: bool = False) -> np.ndarray:
    """The ``n``×``n`` crop of ``image`` through ``matrix`` (bilinear; the image's edge repeated
    beyond it, or 0 with ``edge`` False), :func:`lowpass` first unless ``filtered`` says the image
    already is."""
    from scipy.ndimage import affine_transform

    a, t = matrix[:, :2], matrix[:, 2]
    img = np.asarray(image, np.float32) if filtered else lowpass(image, matrix)
    # affine_transform maps output (row, col) to input (row, col): our (u, v) map with axes swapped.
    return affine_transform(img, a[::-1, ::-1], offset=t[::-1], output_shape=(n, n), order=1,
                            mode="nearest" if edge else "constant", cval=0.0)  # fmt: skip


def view_sample(case_dir: Path, view: dict, degraded: bool) -> dict[str, np.ndarray]:
    """One view's cached arrays (see the module doc)."""
    from ..synth.case import read_masks
    from ..xray import read_xray

    image_path = case_dir / (view["degraded_image"] if degraded else view["image"])
    xr = read_xray(image_path, case_dir / view["sidecar"])
    labels = json.loads((case_dir / view["labels"]).read_text())
    masks = read_masks(case_dir / view["masks"])
    levels, points, visible, packed = [], [], [], []
    for inst in labels["instances"]:
        lm = inst["landmarks"]
        if inst["mask_pixels"] < MIN_MASK_PIXELS or not lm["BC"]["in_fov"]:
            continue
        levels.append(LEVELS.index(inst["level"]))
        points.append([lm[n]["uv"] for n in LANDMARKS])
        visible.append([bool(lm[n]["in_fov"]) for n in LANDMARKS])
        packed.append(np.packbits(masks[inst["mask_index"]].astype(bool), axis=-1))
    k, (h, w) = len(levels), xr.image.shape
    return {
        "image": xr.image.astype(np.float32),
        "mm_per_px": np.float32(np.mean(xr.projection.pixel_spacing_mm)),
        "levels": np.asarray(levels, np.int64),
        "landmarks": np.asarray(points, np.float32).reshape(k, len(LANDMARKS), 2),
        "visible": np.asarray(visible, bool).reshape(k, len(LANDMARKS)),
        "masks": np.asarray(packed, np.uint8).reshape(k, h, (w + 7) // 8),
    }


def prepare(data: Path) -> tuple[list[Path], list[Path]]:
    """Cache every view (clean and degraded) of every case under ``data``; (train, validation)
    files, split by case as for the detector."""
    cache = Path(data) / f".refiner-cache-v{CACHE_VERSION}"
    cache.mkdir(parents=True, exist_ok=True)
    train, val = [], []
    for case_dir in case_dirs(data):
        case = json.loads((case_dir / "case.json").read_text())
        for view in case["views"]:
            for degraded in [False] + ([True] if view.get("degraded_image") else []):
                path = cache / f"{case['case_id']}__{view['name']}{'__degraded' if degraded else ''}.npz"
                if not path.exists():
                    atomic_write_npz(path, view_sample(case_dir, view, degraded))
                (val if is_validation(case["case_id"]) else train).append(path)
    return train, val


class RefinerSamples:
    """Every (view, vertebra) of the cached ``files`` in memory; :meth:`crop` cuts one sample."""

    def __init__(self, files: list[Path]) -> None:
        self.views = []
        for f in files:
            with np.load(f) as z:
                self.views.append({k: z[k] for k in z.files})
        self.index = [(i, k) for i, v in enumerate(self.views) for k in range(len(v["levels"]))]

    def __len__(self) -> int:
        return len(self.index)

    def crop(self, i: int, config: RefinerConfig, rng: np.random.Generator, augment: bool) -> dict[str, np.ndarray]:
        """Sample ``i``: ``image`` (n, n) normalised crop, ``points`` (L, 2) crop pixels,
        ``visible`` (L,) (in the image and in the crop), ``mask`` (n/2, n/2) area fraction,
        ``mm_per_px`` of the crop at the detector. The centre's jitter is drawn from ``rng`` always
        (validation passes a fixed one); rotation and scale with ``augment`` only."""
        v, k = self.index[i]
        view = self.views[v]
        mm = float(view["mm_per_px"])
        radius, angle = JITTER_MM * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        centre = view["landmarks"][k, 0] + radius / mm * np.array([np.cos(angle), np.sin(angle)])
        rot, scale = 0.0, 1.0
        if augment:
            rot = rng.uniform(-AUG_ROTATION_DEG, AUG_ROTATION_DEG)
            scale = float(np.exp(rng.uniform(*np.log(AUG_SCALE))))
        m = crop_matrix(centre, mm, config, rot, scale)
        n = config.crop_px
        points = to_crop(m, view["landmarks"][k])
        inside = np.all((points >= -0.5) & (points <= n - 0.5), axis=1)
        mask = np.unpackbits(view["masks"][k], axis=-1)[:, : view["image"].shape[1]].astype(np.float32)
        mask = cut(mask, m, n, edge=False).reshape(n // 2, 2, n // 2, 2).mean(axis=(1, 3))
        return {
            "image": normalise(cut(view["image"], m, n)),
            "points": points.astype(np.float32),
            "visible": view["visible"][k] & inside,
            "mask": np.clip(mask, 0, 1).astype(np.float32),
            "mm_per_px": np.float32(config.mm_per_px * scale),
        }
