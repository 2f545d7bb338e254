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
from .frame import canal_by_hole_filling, largest_component, resample_local, rough_frame

LANDMARKS = ("BC", "SEC", "IEC", "PCL", "PCR", "SPT", "TPL", "TPR", "VAP", "PWM")
GRID_MM = 0.5
CORTEX_MM = 1.0
TARGET_SHORT_MM = 5.0
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


def _tip(points: np.ndarray, direction: np.ndarray, depth_mm: float = TIP_DEPTH_MM) -> np.ndarray:
    """The extreme of a point set along ``direction``, as the centroid of the points within
    ``depth_mm`` of it: a single extreme voxel would move with the grid, the tip region does not."""
    s = points @ direction
    return points[s >= s.max() - depth_mm].mean(0)


def _body_and_endplates(grid: np.ndarray, lo: np.ndarray, h: float):
    """Canal and body points (local mm), body centroid, superior and inferior endplate centres."""
    canal = canal_by_hole_filling(grid, 2, h)
    ci = np.argwhere(canal) * h + lo
    front = ci[:, 1].max()
    body_mask = grid.copy()
    body_mask[:, : int(np.ceil((front - lo[1]) / h)) + 1, :] = False
    body = np.argwhere(largest_component(body_mask)) * h + lo
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
    origin, R = rough_frame(m, affine)
    warnings: list[str] = []
    # A coarse pass refines the frame (z: IEC → SEC; y: canal → body; x = y × z), the fine pass
    # measures everything in it.
    grid, lo = resample_local(m, affine, origin, R, 1.0)
    ci, body, bc, sec, iec = _body_and_endplates(largest_component(grid), lo, 1.0)
    z_new = (sec - iec) @ R
    z_new /= np.linalg.norm(z_new)
    y_new = R[1] - (R[1] @ z_new) * z_new  # keep the symmetry axis, square it to the new z
    y_new /= np.linalg.norm(y_new)
    origin = origin + bc @ R
    R = np.stack([np.cross(y_new, z_new), y_new, z_new])
    h = float(grid_mm)
    grid, lo = resample_local(m, affine, origin, R, h)
    grid = largest_component(grid)
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
