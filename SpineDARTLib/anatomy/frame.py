"""The anatomical frame of a vertebra mask, step 1-2 of the landmark rules (see
:mod:`.landmarks`): the canal by hole filling (with tilted slicings for kyphotic levels and gap
bridging for open arches), the plane of bilateral symmetry, the anterior side, and resampling a
mask into a frame."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..geometry.carm import rot_x
from ..meshing import grid_points

CORRIDOR_DEPTH_MM = 12.0
ROUGH_GRID_MM = 1.0
CANAL_MIN_MM3 = 300.0


def largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import label

    lab, n = label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def slice_holes(mask: np.ndarray, axis: int, close_vox: int) -> np.ndarray:
    from scipy.ndimage import binary_closing, binary_fill_holes

    disk = None
    if close_vox > 0:
        r = np.arange(-close_vox, close_vox + 1)
        disk = (r[:, None] ** 2 + r[None, :] ** 2) <= close_vox**2
    holes = np.zeros_like(mask, dtype=bool)
    for k in range(mask.shape[axis]):
        sl = [slice(None)] * 3
        sl[axis] = k
        s = mask[tuple(sl)]
        closed = (
            s
            if disk is None
            else binary_closing(np.pad(s, close_vox), disk)[close_vox:-close_vox, close_vox:-close_vox]
        )
        holes[tuple(sl)] = binary_fill_holes(closed) & ~closed
    return holes


def canal_by_hole_filling(mask: np.ndarray, axis: int, voxel_mm: float = 1.0) -> np.ndarray:
    """Voxels enclosed by bone in their slice along ``axis``: the largest 3D component of them.
    Label maps of real CTs (2.5 mm slices) can leave the neural arch open by a voxel or two: if no
    slice encloses a hole, gaps are bridged by an in-plane closing of growing radius (≤ 3 mm),
    which changes only where the canal is looked for, not the bone."""
    best = None
    for gap_mm in (0.0, 1.0, 2.0, 3.0):
        holes = slice_holes(mask, axis, int(round(gap_mm / voxel_mm)))
        if best is None or holes.sum() > best.sum():
            best = holes
        # A canal, not a pore or a few slices of one: ≥ 300 mm³ (a thoracic canal encloses
        # ~190 mm² per slice over the ~10-15 mm where the arch is closed).
        if holes.sum() * voxel_mm**3 >= CANAL_MIN_MM3:
            break
    holes = best
    if not holes.any():
        raise UserError(
            "the vertebra has no closed canal (no slice encloses a hole)", "check the mask is a whole vertebra"
        )
    # A dished or collapsed endplate also encloses "holes" in some slices, but bone lies under them;
    # the canal is seen through: prefer hole voxels whose whole column along the axis is free of bone.
    # (Keeping the whole hole component instead merges a collapsed body's dishes into the canal.)
    see_through = holes & ~mask.any(axis=axis, keepdims=True)
    canal = largest_component(holes)
    if see_through.any():
        through = largest_component(see_through)
        if through.sum() >= 0.3 * min(canal.sum(), see_through.sum()):
            return through
    return canal


def voxel_points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def rough_frame(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin, rows x/y/z): canal → body direction in the axial plane, RAS z.

    Works on the mask resampled to an isotropic 1 mm RAS grid, so that the symmetry search and the
    solidity measures do not depend on the input's voxel size or orientation.
    """
    # The canal is found by hole filling across slices, which needs the slices roughly across the
    # canal. Strongly kyphotic levels (upper thoracic, up to ~45° in a supine chest CT) are not:
    # if the RAS axial slices show no see-through canal, tilted slicings are tried and the one
    # seeing through the most canal is kept. Everything below works in that tilted frame.
    best = None
    for tilt in (0.0, 15.0, -15.0, 30.0, -30.0, 45.0, -45.0):
        Rt = rot_x(np.radians(tilt))
        grid, lo = resample_local(mask, affine, np.zeros(3), Rt, ROUGH_GRID_MM)
        grid = largest_component(grid)
        try:
            canal_mask = canal_by_hole_filling(grid, 2, ROUGH_GRID_MM)
        except UserError:
            continue
        seen = int((canal_mask & ~grid.any(axis=2, keepdims=True)).sum()) * ROUGH_GRID_MM**3
        if best is None or seen > best[0]:
            best = (seen, Rt, grid, lo, canal_mask)
        if tilt == 0.0 and seen >= CANAL_MIN_MM3:
            break
    if best is None:
        raise UserError(
            "the vertebra has no closed canal (no slice encloses a hole)", "check the mask is a whole vertebra"
        )
    _, Rt, grid, lo, canal_mask = best
    A = np.eye(4)
    A[:3, :3] *= ROUGH_GRID_MM
    A[:3, 3] = lo
    canal = voxel_points(canal_mask, A)
    bone = voxel_points(grid, A)
    c = canal.mean(0)
    z = np.array([0.0, 0.0, 1.0])
    # The antero-posterior axis is the one whose plane (with z, through the canal) is the plane of
    # bilateral symmetry. Anterior is the side of the canal where the first CORRIDOR_DEPTH_MM of
    # bone in a canal-wide corridor is most solid (fills its bounding box): the body is a solid
    # slab even when crushed, the arch is a ring of plates and rods. Neither the mean of all bone
    # nor the thickest point nor the amount of bone is robust: long thoracic processes pull the
    # mean, unions of processes are as thick as a crushed body, and a crushed T1 body weighs less
    # than the arch beside its canal.
    rel = bone - c
    # Occupancy of 1 mm cells as a dense boolean grid: a reflected point scores if its cell is
    # bone (a direct lookup; hashing cells with np.isin was 90 % of a scene's annotation time).
    cells = np.floor(rel).astype(np.int64)
    cmin = cells.min(0)
    occ = np.zeros(tuple(cells.max(0) - cmin + 1), bool)
    occ[tuple((cells - cmin).T)] = True

    def symmetry(ang_off: tuple[float, float]) -> int:
        ang, off = ang_off
        w = np.cross(z, np.array([np.cos(ang), np.sin(ang), 0.0]))
        ijk = np.floor(rel - 2 * np.outer(rel @ w - off, w)).astype(np.int64) - cmin
        ok = np.all((ijk >= 0) & (ijk < occ.shape), axis=1)
        return int(occ[tuple(ijk[ok].T)].sum())

    # The plane of symmetry need not pass through the canal's centre (a canal found in a few
    # slices can sit off the midline): search its offset too, or the angle bends to make up for it
    # (real upper thoracic label maps: 10-25° off the ribs' axis).
    coarse = max(((a, 0.0) for a in np.radians(np.arange(0, 180, 5))), key=symmetry)
    ang, off = max(
        ((coarse[0] + da, do) for da in np.radians(np.arange(-4, 5, 1)) for do in np.arange(-4.0, 4.5, 1.0)),
        key=symmetry,
    )
    axis_u = np.array([np.cos(ang), np.sin(ang), 0.0])
    w = np.cross(z, axis_u)
    c = c + off * w
    rel = bone - c
    half = 0.5 * np.ptp((canal - c) @ w)
    along, across = rel @ axis_u, rel @ w
    corridor = np.abs(across) < half
    front, back = ((canal - c) @ axis_u).max(), ((canal - c) @ axis_u).min()
    voxel = abs(np.linalg.det(A[:3, :3]))

    def solidity(sel: np.ndarray) -> float:
        if sel.sum() < 10:
            return 0.0
        box = np.ptp(along[sel]) * np.ptp(across[sel]) * np.ptp(rel[sel, 2])
        return float(sel.sum() * voxel / max(box, 1e-9))

    ahead = solidity(corridor & (along > front) & (along < front + CORRIDOR_DEPTH_MM))
    behind = solidity(corridor & (along < back) & (along > back - CORRIDOR_DEPTH_MM))
    # y is the symmetry plane's axis, signed. (Pointing it from the canal to the body's centroid
    # instead bends it by up to 20° where a label map's body is lopsided: real T1, against the ribs.)
    y = axis_u if ahead >= behind else -axis_u
    if not ((bone - c) @ y > ((canal - c) @ y).max()).any():
        raise UserError("no bone anterior to the canal", "check the mask is a whole vertebra")
    y = y - (y @ z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    # Back from the tilted slicing frame to RAS (local → world is p @ Rt).
    return c @ Rt, np.stack([x, y, z]) @ Rt


def resample_local(mask: np.ndarray, affine: np.ndarray, origin: np.ndarray, R: np.ndarray, spacing: float):
    """The mask on a regular grid of the local frame (linear interpolation, threshold 0.5)."""
    from scipy.ndimage import map_coordinates

    A = np.asarray(affine, float)
    pts = voxel_points(mask, A)
    local = (pts - origin) @ R.T
    vox = np.abs(A[:3, :3]).max()
    lo = local.min(0) - 2 * vox
    hi = local.max(0) + 2 * vox
    g, shape, _ = grid_points(lo, hi, spacing)
    world = g @ R + origin
    ijk = (world - A[:3, 3]) @ np.linalg.inv(A[:3, :3]).T
    vals = map_coordinates(mask.astype(np.float32), ijk.T, order=1, mode="constant", cval=0.0)
    return vals.reshape(shape) >= 0.5, lo
