"""Spine scenes: consecutive generated vertebrae with discs, physiological curvature and rigid
jitter inside a body envelope (fat over muscle; lungs, heart and ribs at thoracic levels; optional
table, bowel gas and a metal cannula), as a CT-like HU volume with a vertebra label map
(TotalSegmentator-v2 ids). With ``options={"detailed_body": True}`` the torso is placed from the
vertebrae's true posterior extent and the thorax is drawn in detail (:mod:`.chest`).

World frame: patient RAS mm with the target vertebra's body centre at the origin. The spine is
stacked from the target outwards: each disc is a hinge, the next vertebra is tilted about the
patient's left-right axis by the segment's curvature angle (kyphosis at thoracic levels, lordosis at
lumbar ones, scaled per scene) plus small random coronal and axial rotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import UserError
from ..labelmaps import TOTALSEG_V2
from ..meshing import grid_spec
from . import chest as chest_detail
from .landmarks import Annotation, annotate_mesh
from .levels import LEVELS, check_level, is_thoracic
from .phantom import PMMA_HU, Phantom, generate, sdf_on_grid
from .raster import draw_tube, ellipsoid_inside, sub_grid, sub_slices
from .vertebra import FRACTURE_TYPES, sample_params

REACH_MM = (90.0, 130.0)  # vertebrae within this distance of the target (a C-arm field is ~180 mm)
MAX_VERTEBRAE = 13
KYPHOSIS_DEG = -3.5  # per thoracic segment, going cranially (see module docstring for the sign)
LORDOSIS_DEG = 9.0  # per lumbar segment, going cranially
DISC_MM = {"thoracic": (4.0, 6.0), "lumbar": (8.0, 12.0)}
HU = {"air": -1000.0, "fat": -100.0, "muscle": 40.0, "disc": 90.0, "lung": -850.0, "heart": 40.0, "gas": -900.0}
RIB_HU, METAL_HU, TABLE_HU = 600.0, 3071.0, 500.0


@dataclass
class SceneVertebra:
    level: str
    phantom: Phantom  # mesh in the vertebra's own frame
    pose: np.ndarray  # 4×4, vertebra frame → world RAS
    annotation: Annotation  # world RAS
    annotation_grid_mm: float
    target: bool

    @property
    def world_vertices(self) -> np.ndarray:
        return self.phantom.vertices @ self.pose[:3, :3].T + self.pose[:3, 3]


@dataclass
class Scene:
    target: str
    seed: int
    vertebrae: list[SceneVertebra]
    hu: np.ndarray  # (I, J, K) float32
    labels: np.ndarray  # (I, J, K) uint8, TotalSegmentator-v2 vertebra ids
    affine: np.ndarray  # IJK → RAS
    extras: dict[str, Any] = field(default_factory=dict)

    def vertebra(self, level: str) -> SceneVertebra:
        return next(v for v in self.vertebrae if v.level == level)


def _segment_angle_deg(lower: str, rng: np.random.Generator, curvature: float) -> float:
    """Tilt of the vertebra above ``lower`` relative to it (about +x)."""
    mean = KYPHOSIS_DEG if is_thoracic(lower) else LORDOSIS_DEG
    return curvature * mean + float(rng.normal(0.0, 1.5))


def _disc_mm(lower: str, rng: np.random.Generator) -> float:
    if lower == "L1":  # thoracolumbar junction (T12-L1 disc): between the two regions
        return float(rng.uniform(6.0, 8.0))
    return float(rng.uniform(*DISC_MM["thoracic" if is_thoracic(lower) else "lumbar"]))


def _chain(target: str, heights: dict[str, float], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Pose (4×4, vertebra frame → world) of every level T1–L5, the target at the identity."""
    curvature = float(rng.uniform(0.5, 1.4))
    idx = LEVELS.index(target)
    poses = {target: np.eye(4)}
    hinge = {}
    for i in range(len(LEVELS) - 1):  # between LEVELS[i] (cranial) and LEVELS[i+1] (caudal)
        lower = LEVELS[i + 1]
        tilt = Rotation.from_euler(
            "xyz", [_segment_angle_deg(lower, rng, curvature), rng.normal(0, 1.0), rng.normal(0, 1.5)], degrees=True
        ).as_matrix()
        hinge[i] = (tilt, _disc_mm(lower, rng), rng.normal(0, 0.7, size=2))
    for i in range(idx - 1, -1, -1):  # cranially from the target
        below = poses[LEVELS[i + 1]]
        tilt, disc, shift = hinge[i]
        R0, t0 = below[:3, :3], below[:3, 3]
        centre = t0 + R0 @ [shift[0], shift[1], heights[LEVELS[i + 1]] / 2 + disc / 2]
        R1 = R0 @ tilt
        poses[LEVELS[i]] = _pose(R1, centre + R1 @ [0.0, 0.0, disc / 2 + heights[LEVELS[i]] / 2])
    for i in range(idx, len(LEVELS) - 1):  # caudally
        above = poses[LEVELS[i]]
        tilt, disc, shift = hinge[i]
        R0, t0 = above[:3, :3], above[:3, 3]
        centre = t0 - R0 @ [shift[0], shift[1], heights[LEVELS[i]] / 2 + disc / 2]
        R1 = R0 @ tilt.T
        poses[LEVELS[i + 1]] = _pose(R1, centre - R1 @ [0.0, 0.0, disc / 2 + heights[LEVELS[i + 1]] / 2])
    return poses


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, t
    return m


def _choose_levels(target: str, poses: dict[str, np.ndarray], rng: np.random.Generator) -> list[str]:
    reach = float(rng.uniform(*REACH_MM))
    chosen = [lv for lv in LEVELS if np.linalg.norm(poses[lv][:3, 3]) <= reach]
    i = LEVELS.index(target)
    lo, hi = LEVELS.index(chosen[0]), LEVELS.index(chosen[-1])
    while hi - lo + 1 < 3:  # at least 3 consecutive vertebrae, extending where the spine goes on
        lo, hi = (lo - 1, hi) if lo > 0 and (hi == len(LEVELS) - 1 or rng.random() < 0.5) else (lo, hi + 1)
    while hi - lo + 1 > MAX_VERTEBRAE:
        lo, hi = (lo + 1, hi) if i - lo > hi - i else (lo, hi - 1)
    return list(LEVELS[lo : hi + 1])


def build_scene(
    target: str,
    seed: int,
    fractured: bool = False,
    spacing_mm: float = 1.0,
    options: dict[str, bool] | None = None,
) -> Scene:
    """One scene around ``target`` (deterministic per seed). ``options`` may force ``table``,
    ``bowel_gas`` (lumbar only), ``metal`` on or off; otherwise each is drawn (50 %, 50 %, 20 %).
    ``detailed_body`` (default off, never drawn): the torso placed from the vertebrae's true
    posterior extent and the thorax in detail (:mod:`.chest`), from a random stream of its own, so
    the vertebrae, their labels and every other draw are those of the plain scene. The plain
    scene places the back skin 35-70 mm behind a loose bounding box of the vertebrae (~35 mm behind
    their spinous tips), which puts the vertebral bodies in the front half of the body, the lungs and
    heart mostly behind them; it is kept as it is because the protocol's synthetic sets are made of it."""
    target = check_level(target)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed {seed!r} is not a non-negative integer", "give e.g. --seed 7")
    if not 0.5 <= spacing_mm <= 2.0:
        raise UserError(f"scene voxel size {spacing_mm} mm is out of range", "give 0.5 to 2 mm")
    rng = np.random.default_rng([int(seed), 5150])
    size = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.25))
    osteoporotic = bool(fractured or rng.random() < 0.2)
    vseeds = {lv: int(rng.integers(0, 2**31 - 1)) for lv in LEVELS}
    fracture = f"{rng.choice(FRACTURE_TYPES)}:{int(rng.integers(1, 4))}" if fractured else None
    params = {
        lv: sample_params(lv, vseeds[lv], fracture if lv == target else None, osteoporotic, size_factor=size)
        for lv in LEVELS
    }
    poses = _chain(target, {lv: p.body_height for lv, p in params.items()}, rng)
    # The patient lies a little rotated on the table.
    g = _pose(Rotation.from_euler("xyz", rng.normal(0, [3.0, 2.0, 4.0]), degrees=True).as_matrix(), np.zeros(3))
    poses = {lv: g @ p for lv, p in poses.items()}
    levels = _choose_levels(target, poses, rng)
    opts = {
        "table": bool(rng.random() < 0.5),
        "bowel_gas": bool(rng.random() < 0.5) and not all(is_thoracic(lv) for lv in levels),
        "metal": bool(rng.random() < 0.2),
    }
    opts.update(options or {})
    cemented = None
    if osteoporotic and len(levels) > 1 and rng.random() < 0.15:
        cemented = str(rng.choice([lv for lv in levels if lv != target]))
        params[cemented] = replace(params[cemented], cemented=True)

    vertebrae = []
    for lv in levels:
        grid = 0.5 if lv == target else 1.0  # neighbours: coarser annotation (speed)
        ph = generate(lv, vseeds[lv], 1.0, params=params[lv])
        an = annotate_mesh(ph.vertices, ph.faces, grid, grid_mm=grid)
        vertebrae.append(SceneVertebra(lv, ph, poses[lv], _annotation_to_world(an, poses[lv]), grid, lv == target))
    chest = np.random.default_rng([int(seed), 5151]) if opts.get("detailed_body") else None
    hu, labels, affine, extras = _rasterise(vertebrae, poses, params, spacing_mm, opts, rng, chest)
    extras.update(
        {
            "options": opts,
            "size_factor": size,
            "osteoporotic": osteoporotic,
            "cemented_level": cemented,
            "vertebra_seeds": {lv: vseeds[lv] for lv in levels},
        }
    )
    return Scene(target, int(seed), vertebrae, hu, labels, affine, extras)


def _annotation_to_world(an: Annotation, pose: np.ndarray) -> Annotation:
    R, t = pose[:3, :3], pose[:3, 3]

    def w(p: np.ndarray) -> np.ndarray:
        return R @ p + t

    return Annotation(
        {k: w(v) for k, v in an.landmarks.items()},
        {s: {k: w(v) for k, v in tr.items()} for s, tr in an.trajectories.items()},
        an.pedicle_width_mm,
        an.frame @ R.T,
        list(an.warnings),
    )


def _world_bounds(v: SceneVertebra) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = v.phantom.model.bounds(2.0)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    w = corners @ v.pose[:3, :3].T + v.pose[:3, 3]
    return w.min(0), w.max(0)


def _rasterise(vertebrae, poses, params, h, opts, rng, chest=None):
    spine_lo = np.min([_world_bounds(v)[0] for v in vertebrae], axis=0)
    spine_hi = np.max([_world_bounds(v)[1] for v in vertebrae], axis=0)
    thoracic = any(is_thoracic(v.level) for v in vertebrae)
    # Torso: an elliptic cylinder along z, its back 35-70 mm behind a loose bounding box of the
    # vertebrae (70-105 mm behind the spinous tips); with the detailed body 10-35 mm behind the tips.
    semi_x = float(rng.uniform(140, 185) if thoracic else rng.uniform(130, 175))
    semi_y = float(rng.uniform(95, 130))
    back = spine_lo[1] - float(rng.uniform(35, 70))
    if chest is not None:  # 10-35 mm of muscle and fat over the spinous tips, measured from the meshes
        detailed = min(float(v.world_vertices[:, 1].min()) for v in vertebrae) - float(chest.uniform(10, 35))
        back += round((detailed - back) / h) * h  # whole voxels: the vertebrae's voxels stay those of the plain scene
    cy = back + semi_y
    fat = float(rng.uniform(8, 35))
    table_gap, table_thick = float(rng.uniform(0, 10)), 25.0
    lo = np.array([-semi_x - 5, back - 5 - (table_gap + table_thick if opts["table"] else 0), spine_lo[2] - 15])
    hi = np.array([semi_x + 5, cy + semi_y + 5, spine_hi[2] + 15])
    shape, affine = grid_spec(lo, hi, h)
    x = lo[0] + h * np.arange(shape[0])
    y = lo[1] + h * np.arange(shape[1])
    # Cross-section (z-invariant): air, fat, muscle/organs.
    r_out = (x[:, None] / semi_x) ** 2 + ((y[None, :] - cy) / semi_y) ** 2
    r_in = (x[:, None] / (semi_x - fat)) ** 2 + ((y[None, :] - cy) / (semi_y - fat)) ** 2
    section = np.where(r_in <= 1, HU["muscle"], np.where(r_out <= 1, HU["fat"], HU["air"])).astype(np.float32)
    hu = np.repeat(section[:, :, None], shape[2], axis=2)
    extras: dict[str, Any] = {"torso": {"semi_x_mm": semi_x, "semi_y_mm": semi_y, "centre_y_mm": cy, "fat_mm": fat}}
    if opts["table"]:
        yt = back - table_gap - table_thick
        j0, j1 = int((yt - lo[1]) / h), int((yt + table_thick - lo[1]) / h)
        hu[:, max(j0, 0) : j1, :] = HU["air"] + 100.0  # foam core
        for j in (max(j0, 0), max(j1 - 3, 0)):  # two carbon-fibre skins, 3 voxels each
            hu[:, j : j + 3, :] = TABLE_HU
        extras["table_y_mm"] = yt
    organs = []
    z_of = {lv: poses[lv][:3, 3] for lv in LEVELS}
    torso = extras["torso"]
    if thoracic and chest is not None:
        extras["chest"] = chest_detail.soft_tissues(hu, affine, shape, poses, params, torso, chest)
    elif thoracic:
        z_top, z_bot = z_of["T1"][2] + 25.0, z_of["T11"][2]
        zc, zs = 0.5 * (z_top + z_bot), 0.5 * (z_top - z_bot)
        for sx in (-1.0, 1.0):
            organs.append(("lung", (sx * 0.45 * semi_x, cy + 0.05 * semi_y, zc), (0.36 * semi_x, 0.7 * semi_y, zs)))
        zh = 0.5 * (z_of["T6"][2] + z_of["T9"][2])
        organs.append(("heart", (-0.12 * semi_x, cy + 0.35 * semi_y, zh), (55.0, 45.0, 60.0)))
    if opts.get("bowel_gas"):
        for _ in range(int(rng.integers(3, 9))):
            c = (rng.uniform(-0.6, 0.6) * semi_x, cy + rng.uniform(0.0, 0.6) * semi_y, rng.uniform(lo[2], hi[2]))
            organs.append(("gas", c, tuple(rng.uniform(8, 25, size=3))))
    for name, c, s in organs:
        sl, pts = sub_grid(np.asarray(c) - s, np.asarray(c) + s, affine, shape)
        inside = ellipsoid_inside(pts, c, s).reshape(hu[sl].shape)
        hu[sl][inside & (hu[sl] > HU["fat"] - 1)] = HU[name]
    if thoracic:
        _ribs(hu, affine, shape, poses, params, torso, rng, chest)
    if thoracic and chest is not None:
        extras["chest"].update(chest_detail.bones(hu, affine, shape, poses, params, torso, chest))
    _discs(hu, affine, shape, vertebrae, params)
    labels = np.zeros(shape, np.uint8)
    best = np.full(shape, np.inf, np.float32)
    for v in vertebrae:
        _vertebra(hu, labels, best, affine, shape, v, h)
    if opts["metal"]:
        extras["metal"] = _cannula(hu, affine, shape, vertebrae, rng)
    return hu, labels, affine, extras


def _ribs(hu, affine, shape, poses, params, torso, rng, chest=None):
    """A rib pair per thoracic level in the volume: from the transverse-process tip around the
    inside of the body wall towards the front, dropping as it goes (floating ribs 11-12 short).
    The plain ribs are solid and sweep on past the midline (kept: the protocol's synthetic sets are
    made of them); with ``chest`` (the detailed thorax's stream) they are drawn as :mod:`.chest`
    does, from the same draws of ``rng`` plus their own."""
    semi_x, semi_y, cy, fat = (torso[k] for k in ("semi_x_mm", "semi_y_mm", "centre_y_mm", "fat_mm"))
    for lv in (f"T{i}" for i in range(1, 13)):
        pose, pr = poses[lv], params[lv]
        n = int(lv[1:])
        reach = 0.45 if n >= 11 else (0.95 if n <= 7 else 0.8)  # fraction of the half-ring
        drop = float(rng.uniform(25, 45))
        if chest is not None:  # real ribs fall 2-4 vertebrae from head to front end
            drop *= float(chest.uniform(1.5, 2.2))
        for sx in (-1.0, 1.0):
            start = pose[:3, :3] @ [sx * pr.tp_span / 2, -0.3 * pr.canal_depth - pr.body_depth / 2, 0.0] + pose[:3, 3]
            radius = float(rng.uniform(4.0, 5.5))
            if chest is not None:
                path, cartilage = chest_detail.rib_path(start, sx, torso, n, drop)
                chest_detail.draw_rib(hu, affine, shape, path, cartilage, radius, chest)
                continue
            ax, ay = 0.85 * (semi_x - fat), 0.85 * (semi_y - fat)
            a0 = np.arctan2((start[1] - cy) / ay, sx * start[0] / ax)  # angle of the start on the ring
            angles = np.linspace(a0, a0 + reach * (np.pi / 2 - a0 + np.pi / 2), 14)
            path = np.stack(
                [sx * ax * np.cos(angles), cy + ay * np.sin(angles), start[2] - drop * np.linspace(0, 1, 14) ** 1.5],
                axis=1,
            )
            path = np.vstack([start, path[1:]])
            draw_tube(hu, affine, shape, path, radius, RIB_HU)


def _discs(hu, affine, shape, vertebrae, params):
    for a, b in zip(vertebrae[:-1], vertebrae[1:], strict=True):  # a cranial of b
        pa, pb = a.pose, b.pose
        top_b = pb[:3, :3] @ [0, 0, params[b.level].body_height / 2] + pb[:3, 3]
        bot_a = pa[:3, :3] @ [0, 0, -params[a.level].body_height / 2] + pa[:3, 3]
        c = 0.5 * (top_b + bot_a)
        axis = bot_a - top_b
        half = 0.5 * np.linalg.norm(axis) + 2.0
        axis /= np.linalg.norm(axis)
        R = pb[:3, :3]
        w = 0.47 * min(params[a.level].body_width, params[b.level].body_width)
        dd = 0.47 * min(params[a.level].body_depth, params[b.level].body_depth)
        ext = np.array([w, dd, half]) + 3
        sl, pts = sub_grid(c - ext.max(), c + ext.max(), affine, shape)
        q = pts - c
        along = q @ axis
        lx, ly = q @ R[:, 0], q @ R[:, 1]
        inside = ((lx / w) ** 2 + ((ly - 0.0) / dd) ** 2 <= 1.0) & (np.abs(along) <= half)
        hu[sl][inside.reshape(hu[sl].shape)] = HU["disc"]


def _vertebra(hu, labels, best, affine, shape, v: SceneVertebra, h: float) -> None:
    lo, hi = _world_bounds(v)
    sl, origin = sub_slices(lo, hi, affine, shape)
    R, t = v.pose[:3, :3], v.pose[:3, 3]
    model, pr = v.phantom.model, v.phantom.params
    sub_shape = hu[sl].shape
    d = sdf_on_grid(lambda p: model((p - t) @ R), origin, sub_shape, h).reshape(-1)
    occ = np.clip(0.5 - d / h, 0.0, 1.0)
    # Depth below the surface ≈ −d (the model is close to a distance function): cortex within
    # the cortical thickness, cancellous (or cement) deeper.
    bone = np.where(-d <= pr.cortex_mm, pr.cortical_hu, pr.cancellous_hu)
    if pr.cemented:
        deep = np.flatnonzero(-d > pr.cortex_mm)
        pts = np.stack(np.unravel_index(deep, sub_shape), -1) * h + origin
        bone[deep[model.cement((pts - t) @ R) < 0]] = PMMA_HU
    sub = hu[sl].reshape(-1)
    hu[sl] = (sub * (1 - occ) + occ * bone).reshape(sub_shape)
    lab, bst = labels[sl].reshape(-1), best[sl].reshape(-1)
    win = (d < 0) & (d < bst)
    lab[win] = TOTALSEG_V2[v.level]
    bst[win] = d[win]
    labels[sl] = lab.reshape(sub_shape)
    best[sl] = bst.reshape(sub_shape)


def _cannula(hu, affine, shape, vertebrae, rng) -> dict[str, Any]:
    """A steel cannula (or K-wire) along the planned path of a random vertebra, from outside the
    back to the target point: a radio-opaque distractor."""
    v = vertebrae[int(rng.integers(0, len(vertebrae)))]
    side = str(rng.choice(["left", "right"]))
    tr = v.annotation.trajectories[side]
    d = tr["target"] - tr["entry"]
    d /= np.linalg.norm(d)
    start = tr["entry"] - float(rng.uniform(40, 90)) * d
    radius = float(rng.choice([0.6, 1.2, 1.5]))
    draw_tube(hu, affine, shape, np.stack([start, tr["target"]]), radius, METAL_HU)
    return {
        "level": v.level,
        "side": side,
        "from_ras": start.round(3).tolist(),
        "to_ras": tr["target"].round(3).tolist(),
        "radius_mm": radius,
    }
