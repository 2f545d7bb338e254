"""Ground truth by rule: the 10 landmarks, pedicle isthmus and widths, and the transpedicular
trajectories of a vertebra, from a binary mask (a label map, or a mesh voxelised) — one algorithm
for generated and real vertebrae (``../shared/research/anatomy.md`` §1–§2).

1. Canal = the through-hole: holes filled slice by slice across the canal, keeping those seen
   through along the slicing axis (a dished endplate encloses holes too, with bone under them).
   Slices are RAS axial unless they see through too little canal (< 300 mm³); then sagittal tilts
   of ±15/30/45° are tried and the one seeing through the most is kept (upper thoracic levels of
   a supine chest CT are tilted 30-45°). Arches left open by a voxel or two in a label map are
   bridged by an in-plane closing (≤ 3 mm) used only to find the canal.
2. Frame: y (anterior) = the axis of the plane of bilateral symmetry (angle and offset searched),
   signed towards the side of the canal with more bone in a canal-wide corridor; z (cranial) = the
   slicing axis of step 1 (the endplate centres are taken along it, so it is not re-estimated:
   frames are good to the 15° tilt step), x = y × z, which points to the patient's right
   whatever the array's index order. Origin BC, the body centroid. The mask is then resampled on a
   0.5 mm grid in that frame so every rule below is a slice of a regular grid. (Tested against the
   rib pairs of the real CT: the left-right axis within 8°.)
3. Body = bone anterior to the canal's anterior boundary (largest component). SEC/IEC = mean of the
   top/bottom surface of the body's central region; VAP/PWM = most anterior/posterior body point on
   the mid-sagittal line at BC's height.
4. Pedicle (per side) = bone lateral to the canal between the posterior body wall and the middle of
   the canal's depth (behind it the laminae begin); sections perpendicular to y; the isthmus is the
   section of minimum area, its centroid PCL/PCR. Its transverse and vertical extents, corrected by
   the obliquity of the trajectory (a y-section crossed at θ is 1/cos θ too wide), are the outer
   width and height across the path (inner = outer − 2 × cortex). The pedicle's own axis is not
   used: the centroid path of the sections bends where the pedicle joins the body and the arch, and
   its slope made the widths unstable (tried: −45 % at L3). Bone joined to the pedicle in the same
   section (the root of an L5 transverse process) still widens it.
5. SPT = most posterior bone within 8 mm of the midline; TPL/TPR = most lateral bone behind the body
   (each tip, like VAP/PWM, is the centroid of the last 2 mm, so that it does not jump with the grid).
6. Trajectory (per side): the axis through the isthmus centre aimed at the anterior third of its own
   hemi-body (a quarter of the body width from the midline, half-way from the isthmus height to BC's);
   entry where the axis leaves the posterior cortex, target 5 mm short of the anterior cortex.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError
from ..meshing import grid_points

LANDMARKS = ("BC", "SEC", "IEC", "PCL", "PCR", "SPT", "TPL", "TPR", "VAP", "PWM")
GRID_MM = 0.5
CORTEX_MM = 1.0
TARGET_SHORT_MM = 5.0
CORRIDOR_DEPTH_MM = 12.0
ROUGH_GRID_MM = 1.0
CANAL_MIN_MM3 = 300.0
TIP_DEPTH_MM = 2.0  # process tips and body points: centroid of the last 2 mm


@dataclass
class Annotation:
    landmarks: dict[str, np.ndarray]  # RAS mm
    trajectories: dict[str, dict[str, np.ndarray]]  # side -> entry, target, isthmus (RAS mm)
    pedicle_width_mm: dict[str, dict[str, float]]  # side -> outer, inner, height
    frame: np.ndarray  # (3, 3): rows x (right), y (anterior), z (cranial)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "landmarks": {k: np.round(v, 3).tolist() for k, v in self.landmarks.items()},
            "trajectories": {
                s: {k: np.round(v, 3).tolist() for k, v in t.items()} for s, t in self.trajectories.items()
            },
            "pedicle_width_mm": {
                s: {k: round(float(v), 3) for k, v in w.items()} for s, w in self.pedicle_width_mm.items()
            },
            "frame": np.round(self.frame, 6).tolist(),
            "warnings": list(self.warnings),
        }


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import label

    lab, n = label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def _slice_holes(mask: np.ndarray, axis: int, close_vox: int) -> np.ndarray:
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


def _canal_by_hole_filling(mask: np.ndarray, axis: int, voxel_mm: float = 1.0) -> np.ndarray:
    """Voxels enclosed by bone in their slice along ``axis``: the largest 3D component of them.
    Label maps of real CTs (2.5 mm slices) can leave the neural arch open by a voxel or two: if no
    slice encloses a hole, gaps are bridged by an in-plane closing of growing radius (≤ 3 mm),
    which changes only where the canal is looked for, not the bone."""
    best = None
    for gap_mm in (0.0, 1.0, 2.0, 3.0):
        holes = _slice_holes(mask, axis, int(round(gap_mm / voxel_mm)))
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
    canal = _largest_component(holes)
    if see_through.any():
        through = _largest_component(see_through)
        if through.sum() >= 0.3 * min(canal.sum(), see_through.sum()):
            return through
    return canal


def _points(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _rough_frame(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        Rt = _rot_x(np.radians(tilt))
        grid, lo = _resample_local(mask, affine, np.zeros(3), Rt, ROUGH_GRID_MM)
        grid = _largest_component(grid)
        try:
            canal_mask = _canal_by_hole_filling(grid, 2, ROUGH_GRID_MM)
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
    canal = _points(canal_mask, A)
    bone = _points(grid, A)
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


def _rot_x(a: float) -> np.ndarray:
    """Rows = the axes of a frame tilted by ``a`` about RAS x (a sagittal tilt)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _resample_local(mask: np.ndarray, affine: np.ndarray, origin: np.ndarray, R: np.ndarray, spacing: float):
    """The mask on a regular grid of the local frame (linear interpolation, threshold 0.5)."""
    from scipy.ndimage import map_coordinates

    A = np.asarray(affine, float)
    pts = _points(mask, A)
    local = (pts - origin) @ R.T
    vox = np.abs(A[:3, :3]).max()
    lo = local.min(0) - 2 * vox
    hi = local.max(0) + 2 * vox
    g, shape, _ = grid_points(lo, hi, spacing)
    world = g @ R + origin
    ijk = (world - A[:3, 3]) @ np.linalg.inv(A[:3, :3]).T
    vals = map_coordinates(mask.astype(np.float32), ijk.T, order=1, mode="constant", cval=0.0)
    return vals.reshape(shape) >= 0.5, lo


def _tip(points: np.ndarray, direction: np.ndarray, depth_mm: float = TIP_DEPTH_MM) -> np.ndarray:
    """The extreme of a point set along ``direction``, as the centroid of the points within
    ``depth_mm`` of it: a single extreme voxel would move with the grid, the tip region does not."""
    s = points @ direction
    return points[s >= s.max() - depth_mm].mean(0)


def _body_and_endplates(grid: np.ndarray, lo: np.ndarray, h: float):
    """Canal and body points (local mm), body centroid, superior and inferior endplate centres."""
    canal = _canal_by_hole_filling(grid, 2, h)
    ci = np.argwhere(canal) * h + lo
    front = ci[:, 1].max()
    body_mask = grid.copy()
    body_mask[:, : int(np.ceil((front - lo[1]) / h)) + 1, :] = False
    body = np.argwhere(_largest_component(body_mask)) * h + lo
    bc = body.mean(0)
    # Endplates: the top/bottom surface of the body's central columns.
    w_b, d_b = np.ptp(body[:, 0]), np.ptp(body[:, 1])
    cols = body[(np.abs(body[:, 0] - bc[0]) < 0.3 * w_b) & (np.abs(body[:, 1] - bc[1]) < 0.3 * d_b)]
    _, inv = np.unique(np.round(cols[:, :2] / h).astype(np.int64), axis=0, return_inverse=True)
    inv = inv.ravel()
    top = np.full(inv.max() + 1, -np.inf)
    bot = np.full(inv.max() + 1, np.inf)
    np.maximum.at(top, inv, cols[:, 2])
    np.minimum.at(bot, inv, cols[:, 2])
    xy = cols[:, :2].mean(0)
    return ci, body, bc, np.array([*xy, top.mean()]), np.array([*xy, bot.mean()])


def annotate_mask(
    mask: np.ndarray, affine: np.ndarray, cortex_mm: float = CORTEX_MM, grid_mm: float = GRID_MM
) -> Annotation:
    """Landmarks, pedicle widths and trajectories of one vertebra's binary mask (RAS affine),
    measured on a ``grid_mm`` grid of the anatomical frame (0.5 mm; 1 mm is ~4× faster and is
    what scenes use for the neighbours of the target)."""
    from scipy.ndimage import label

    m = np.asarray(mask).astype(bool)
    if m.ndim != 3 or m.sum() < 50:
        raise UserError("vertebra mask is empty or not 3-D", "give a 3-D mask of one whole vertebra")
    origin, R = _rough_frame(m, affine)
    warnings: list[str] = []
    # A coarse pass refines the frame (z: IEC → SEC; y: canal → body; x = y × z), the fine pass
    # measures everything in it.
    grid, lo = _resample_local(m, affine, origin, R, 1.0)
    ci, body, bc, sec, iec = _body_and_endplates(_largest_component(grid), lo, 1.0)
    z_new = (sec - iec) @ R
    z_new /= np.linalg.norm(z_new)
    y_new = R[1] - (R[1] @ z_new) * z_new  # keep the symmetry axis, square it to the new z
    y_new /= np.linalg.norm(y_new)
    origin = origin + bc @ R
    R = np.stack([np.cross(y_new, z_new), y_new, z_new])
    h = float(grid_mm)
    grid, lo = _resample_local(m, affine, origin, R, h)
    grid = _largest_component(grid)
    ci, body, bc, sec, iec = _body_and_endplates(grid, lo, h)
    bi = np.argwhere(grid) * h + lo
    # Express everything relative to BC (the origin of the anatomical frame).
    shift = bc
    origin = origin + shift @ R

    def to_world(p: np.ndarray) -> np.ndarray:
        return np.asarray(p) @ R + origin

    bc_l = np.zeros(3)
    body, bi, ci = body - shift, bi - shift, ci - shift
    sec, iec = sec - shift, iec - shift
    lo = lo - shift
    tol = max(1.5, 0.6 * float(np.abs(np.asarray(affine)[:3, :3]).max()))
    sagittal = body[np.abs(body[:, 0]) < tol]
    mid = sagittal[np.abs(sagittal[:, 2]) < tol]
    if len(mid) < 5 and len(sagittal):
        # A biconcave collapse can leave no bone at BC's height on the midline: use the height
        # where the midline has bone, nearest to BC's.
        zc = sagittal[np.argmin(np.abs(sagittal[:, 2])), 2]
        mid = sagittal[np.abs(sagittal[:, 2] - zc) < tol]
    if len(mid) == 0:
        raise UserError("no body bone on the mid-sagittal line", "check the mask is a whole vertebra")
    vap, pwm = _tip(mid, np.array([0.0, 1.0, 0.0])), _tip(mid, np.array([0.0, -1.0, 0.0]))
    back = 0.5 * (ci[:, 1].max() + ci[:, 1].min())  # pedicles: beside the canal's anterior half
    lm: dict[str, np.ndarray] = {"BC": bc_l, "SEC": sec, "IEC": iec, "VAP": vap, "PWM": pwm}

    posterior = bi[bi[:, 1] < pwm[1]]
    near_mid = bi[np.abs(bi[:, 0]) < 8.0]
    lm["SPT"] = _tip(near_mid, np.array([0.0, -1.0, 0.0]))
    lm["TPL"] = _tip(posterior, np.array([-1.0, 0.0, 0.0]))
    lm["TPR"] = _tip(posterior, np.array([1.0, 0.0, 0.0]))

    # Pedicles: y-sections between the posterior body wall and the canal's back, beside the canal.
    canal_x = np.abs(ci[:, 0]).max()
    canal_z = ci[:, 2].mean()
    j_front = int(round((pwm[1] - lo[1]) / h))
    j_back = int(round((back - lo[1]) / h))
    traj: dict[str, dict[str, np.ndarray]] = {}
    widths: dict[str, dict[str, float]] = {}
    for side, sx, name in (("left", -1.0, "PCL"), ("right", 1.0, "PCR")):
        best = None
        for j in range(max(j_back, 0), min(j_front, grid.shape[1])):
            sl = grid[:, j, :].copy()
            xs = lo[0] + h * np.arange(grid.shape[0])
            sl[(sx * xs) <= 0, :] = False
            lab2, n = label(sl)
            if n == 0:
                continue
            pix = np.argwhere(lab2 > 0)
            px = pix[:, 0] * h + lo[0]
            pz = pix[:, 1] * h + lo[2]
            # The pedicle is the section component nearest the canal's lateral wall at canal height.
            dist = np.hypot(np.abs(px) - canal_x * 0.8, pz - canal_z)
            comp = lab2[tuple(pix[dist.argmin()])]
            cpix = np.argwhere(lab2 == comp)
            area = len(cpix) * h * h
            cx = cpix[:, 0] * h + lo[0]
            cz = cpix[:, 1] * h + lo[2]
            if best is None or area < best[0]:
                best = (area, np.array([cx.mean(), lo[1] + j * h, cz.mean()]), np.ptp(cx) + h, np.ptp(cz) + h)
        if best is None:
            raise UserError(f"no {side} pedicle found beside the canal", "check the mask is a whole vertebra")
        _, pc, outer, height = best
        lm[name] = pc
        # Trajectory: through the isthmus centre towards the anterior third of its own hemi-body.
        aim = np.array([sx * 0.25 * np.ptp(body[:, 0]), vap[1] - np.ptp(body[:, 1]) / 6, pc[2] + 0.5 * (0.0 - pc[2])])
        d = aim - pc
        d /= np.linalg.norm(d)
        # Widths across the path: the y-section of a pedicle crossed obliquely by the trajectory
        # is 1/cos too wide (tall); what a cannula must pass is the section perpendicular to it.
        outer *= abs(d[1]) / np.hypot(d[0], d[1])
        height *= abs(d[1]) / np.hypot(d[1], d[2])
        widths[side] = {"outer": float(outer), "inner": float(max(outer - 2 * cortex_mm, 0.0)), "height": float(height)}

        def inside(p: np.ndarray) -> bool:
            ijk = np.round((p - lo) / h).astype(int)
            return bool(np.all(ijk >= 0) and np.all(ijk < grid.shape) and grid[tuple(ijk)])

        entry = pc.copy()
        while inside(entry - 0.25 * d):
            entry = entry - 0.25 * d
        exit_ = pc.copy()
        while inside(exit_ + 0.25 * d):
            exit_ = exit_ + 0.25 * d
        target = exit_ - TARGET_SHORT_MM * d
        if sx * target[0] < 0:
            warnings.append(f"{side} target crosses the midline")
        traj[side] = {"entry": entry, "target": target, "isthmus": pc}
    world_lm = {k: to_world(lm[k]) for k in LANDMARKS}
    world_traj = {s: {k: to_world(v) for k, v in t.items()} for s, t in traj.items()}
    return Annotation(world_lm, world_traj, widths, R, warnings)


def annotate_mesh(
    vertices: np.ndarray, faces: np.ndarray, voxel_mm: float = GRID_MM, grid_mm: float = GRID_MM
) -> Annotation:
    """The same rules on a closed mesh, voxelised (partial volume ≥ 0.5) at ``voxel_mm`` and
    measured on a ``grid_mm`` grid (see :func:`annotate_mask`)."""
    from ..meshing import voxelize_mesh

    occ, A = voxelize_mesh(vertices, faces, spacing_mm=voxel_mm, supersample=1)
    return annotate_mask(occ >= 0.5, A, grid_mm=grid_mm)
