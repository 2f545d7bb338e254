"""2-D vertebra instance masks per view: an ``.npz`` with one array ``view<i>_<level>`` (H×W, 0/1)
per vertebra and view, views in the order of the X-rays. The detector will write it; the benchmark
and the demo build it from ground truth."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ..anatomy.levels import LEVELS
from ..atomic import atomic_write_npz
from ..errors import UserError

_KEY = re.compile(r"^view(\d+)_([TL]\d+)$")


def write_instance_masks(path: str | Path, views: list[dict[str, np.ndarray]]) -> Path:
    arrays = {f"view{i}_{lv}": np.asarray(m).astype(np.uint8) for i, v in enumerate(views) for lv, m in v.items()}
    atomic_write_npz(Path(path), arrays)
    return Path(path)


def read_instance_masks(path: str | Path, image_sizes: list[tuple[int, int]]) -> list[dict[str, np.ndarray]]:
    """Masks per view (level → bool H×W); ``image_sizes``: (width, height) of each X-ray."""
    path = Path(path)
    if not path.is_file():
        raise UserError("masks file not found", "check the path of --masks", path)
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UserError(f"not a readable .npz ({exc.__class__.__name__})", "give the masks as an .npz", path) from None
    views: list[dict[str, np.ndarray]] = [{} for _ in image_sizes]
    for key, a in arrays.items():
        m = _KEY.match(key)
        if m is None or m.group(2) not in LEVELS:
            raise UserError(f"array {key!r} is not named view<i>_<level>", "name arrays like view0_L3", path)
        i, level = int(m.group(1)), m.group(2)
        if i >= len(image_sizes):
            raise UserError(f"{key}: view {i} but {len(image_sizes)} X-rays were given", "one index per X-ray", path)
        w, h = image_sizes[i]
        if a.shape != (h, w):
            raise UserError(f"{key} is {a.shape[::-1]} px but X-ray {i} is {(w, h)}", "give masks of that image", path)
        views[i][level] = a.astype(bool)
    return views
