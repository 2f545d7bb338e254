"""Reconstruction and trajectory metrics of the benchmark protocol (p1).

- Dice: both meshes voxelised (inside test at voxel centres) on one 0.5 mm isotropic grid covering
  both; the **GT ceiling** of a real label map is the Dice between the label resampled (nearest)
  to that grid and its own ground-truth surface (marching cubes at 0.5) voxelised there.
- NSD@1/2 mm, HD95, ASSD: mesh to mesh (:func:`..surface.surface_distances`).
- Trajectories: entry and target errors (mm) and the angle (°) between planned and true axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UserError
from .meshing import inside_grid, mesh_from_mask
from .surface import surface_distances

DICE_GRID_MM = 0.5
MAX_GRID_VOXELS = 60e6  # a union grid larger than this (a run-away fit) is voxelised by parts


def _grid_around(
    points: list[np.ndarray], spacing: float, margin: float = 1.0
) -> tuple[np.ndarray, tuple[int, int, int]]:
    lo = np.min([p.min(0) for p in points], axis=0) - margin
    hi = np.max([p.max(0) for p in points], axis=0) + margin
    shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1)
    return lo, shape


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    n = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / n) if n else 1.0


def mesh_dice(
    pred: tuple[np.ndarray, np.ndarray], gt: tuple[np.ndarray, np.ndarray], spacing: float = DICE_GRID_MM
) -> float:
    """Dice of two closed meshes voxelised on one ``spacing`` grid covering both."""
    lo_p, hi_p = pred[0].min(0), pred[0].max(0)
    lo_g, hi_g = gt[0].min(0), gt[0].max(0)
    if np.any(lo_p > hi_g) or np.any(lo_g > hi_p):
        return 0.0  # disjoint boxes (a fit that ran away): no overlap, and no huge grid to build
    origin, shape = _grid_around([pred[0], gt[0]], spacing)
    if np.prod(shape, dtype=float) > MAX_GRID_VOXELS:
        return _dice_by_parts(pred, gt, spacing)
    return dice(inside_grid(*pred, origin, spacing, shape), inside_grid(*gt, origin, spacing, shape))


def _dice_by_parts(pred, gt, spacing: float) -> float:
    """The same Dice when one mesh is huge: each mesh voxelised on its own box of one lattice, the
    overlap counted where the boxes meet (memory bounded by each mesh, not by their union)."""

    def vox(mesh):
        lo = np.floor(mesh[0].min(0) / spacing) * spacing - spacing
        shape = tuple(int(n) for n in np.ceil((mesh[0].max(0) - lo) / spacing).astype(int) + 2)
        if np.prod(shape, dtype=float) > MAX_GRID_VOXELS:
            raise UserError("a mesh is too large to voxelise for Dice", "check the fitted shape (it ran away)")
        return np.rint(lo / spacing).astype(np.int64), inside_grid(*mesh, lo, spacing, shape)

    (ia, a), (ib, b) = vox(pred), vox(gt)
    lo = np.maximum(ia, ib)
    hi = np.minimum(ia + a.shape, ib + b.shape)
    n = int(a.sum()) + int(b.sum())
    if np.any(hi <= lo) or n == 0:
        return 0.0
    sa = tuple(slice(int(lo[k] - ia[k]), int(hi[k] - ia[k])) for k in range(3))
    sb = tuple(slice(int(lo[k] - ib[k]), int(hi[k] - ib[k])) for k in range(3))
    return float(2 * np.logical_and(a[sa], b[sb]).sum() / n)


def gt_ceiling_dice(mask: np.ndarray, affine: np.ndarray, spacing: float = DICE_GRID_MM) -> float:
    """Dice between a binary label (on its own grid, ``affine`` IJK→RAS) resampled nearest-neighbour
    to the ``spacing`` grid and its own GT surface voxelised there: the best Dice any surface can
    reach against this label on that grid."""
    A = np.asarray(affine, float)
    v, f = mesh_from_mask(mask, A)
    origin, shape = _grid_around([v], spacing)
    axes = [origin[i] + spacing * np.arange(shape[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    ijk = np.rint((grid - A[:3, 3]) @ np.linalg.inv(A[:3, :3]).T).astype(np.int64)
    ok = np.all((ijk >= 0) & (ijk < np.array(mask.shape)), axis=1)
    label = np.zeros(len(grid), bool)
    label[ok] = np.asarray(mask, bool)[tuple(ijk[ok].T)]
    return dice(label.reshape(shape), inside_grid(v, f, origin, spacing, shape))


def surface_metrics(
    pred: tuple[np.ndarray, np.ndarray], gt: tuple[np.ndarray, np.ndarray], seed: int = 0, spacing: float = DICE_GRID_MM
) -> dict[str, float]:
    """Dice, NSD@1/2 mm, HD95 and ASSD of a predicted mesh against the GT mesh."""
    d = surface_distances(pred, gt, seed=seed)
    return {
        "dice": mesh_dice(pred, gt, spacing),
        "nsd1": d.nsd1,
        "nsd2": d.nsd2,
        "hd95": d.hd95,
        "assd": d.assd,
    }


def trajectory_errors(pred: dict[str, dict[str, Any]], gt: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mean over the sides present in both of the entry error, target error (mm) and axis angle (°);
    ``pred``/``gt``: side → {"entry": xyz, "target": xyz}."""
    entry, target, angle = [], [], []
    for side in ("left", "right"):
        if side not in pred or side not in gt or pred[side] is None or gt[side] is None:
            continue
        pe, pt = np.asarray(pred[side]["entry"], float), np.asarray(pred[side]["target"], float)
        ge, gtt = np.asarray(gt[side]["entry"], float), np.asarray(gt[side]["target"], float)
        entry.append(np.linalg.norm(pe - ge))
        target.append(np.linalg.norm(pt - gtt))
        a, b = pt - pe, gtt - ge
        c = float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))
        angle.append(np.degrees(np.arccos(c)))
    if not entry:
        return {"entry_err_mm": float("nan"), "target_err_mm": float("nan"), "angle_err_deg": float("nan")}
    return {
        "entry_err_mm": float(np.mean(entry)),
        "target_err_mm": float(np.mean(target)),
        "angle_err_deg": float(np.mean(angle)),
    }
