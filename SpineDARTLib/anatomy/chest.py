"""The chest around a thoracic spine scene, in detail (``build_scene(options={"detailed_body": True})``).

Why: a lateral chest X-ray's vertebrae lie under both lungs' walls and vessels, the heart and aorta,
the trachea, the scapulae and the shoulders, with both sides' ribs crossing them; the plain scene
(:mod:`.scene`) has two smooth lung ellipsoids, a heart and solid ribs that sweep around the front
past the midline, so its laterals show crisp bodies behind a bright rib column that no real chest has
(BENCHMARKS.md, detector runs 4-6: the real CT's laterals were found at recall 0.02-0.08). This
module draws, from its own random stream (the vertebrae, their poses and the plain scene's other
draws stay the same for a seed):

- lungs with diaphragm domes (the right one higher), posterior recesses down to ~T12, a slow
  density texture and vessels branching from the hila;
- the heart, the aortic arch and the descending aorta beside the spine, the trachea and main bronchi;
- ribs with a cortex over a cancellous core, sloping down to costal cartilage that ends at the
  sternum's edge (floating ribs short);
- the sternum, the clavicles, the scapulae (blade, lateral border, spine) and the humeral heads with
  the deltoids.

Positions follow the torso (its semi-axes, centre and fat) and the vertebrae's poses; sizes are
textbook ranges, drawn per scene.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .raster import bezier, draw_bone_tube, draw_tube, ellipsoid_inside, sub_grid

LUNG_HU, SOFT_HU, AIR_HU, FAT_HU = -850.0, 40.0, -1000.0, -100.0


def _in_body(values: np.ndarray) -> np.ndarray:
    return values > FAT_HU - 1


def _in_lung(values: np.ndarray) -> np.ndarray:
    return values < -500


def _in_chest(values: np.ndarray) -> np.ndarray:
    """Inside the body, lungs included (the air outside is -1000)."""
    return values > -990


def _outside_lung(values: np.ndarray) -> np.ndarray:
    return values >= -500


def _at(poses, level: str, local) -> np.ndarray:
    """A point in a vertebra's frame (its body centre at the origin) in the world."""
    p = poses[level]
    return p[:3, :3] @ np.asarray(local, float) + p[:3, 3]


def _front(poses, params, level: str) -> np.ndarray:
    """The middle of the vertebral body's anterior wall."""
    return _at(poses, level, [0.0, params[level].body_depth / 2, 0.0])


def _z(poses, level: str) -> float:
    return float(poses[level][2, 3])


def _ring(torso: dict[str, float]) -> tuple[float, float]:
    """Semi-axes of the ellipse the ribs follow (inside the body wall), centred on the torso's axis."""
    return 0.85 * (torso["semi_x_mm"] - torso["fat_mm"]), 0.85 * (torso["semi_y_mm"] - torso["fat_mm"])


def _ring_back(torso: dict[str, float], x: float) -> float:
    """y of the rib ring's back at ``x`` (or its back-most point where ``x`` is outside it)."""
    ax, ay = _ring(torso)
    return torso["centre_y_mm"] - ay * float(np.sqrt(max(0.0, 1.0 - (x / ax) ** 2)))


def soft_tissues(hu, affine, shape, poses, params, torso: dict[str, float], rng: np.random.Generator) -> dict[str, Any]:
    """Lungs (domes, recesses, texture, vessels), heart, aorta, trachea and bronchi."""
    sx_t, sy_t, cy = torso["semi_x_mm"], torso["semi_y_mm"], torso["centre_y_mm"]
    ax, ay = _ring(torso)
    z_top, z_bot = _z(poses, "T1") + rng.uniform(15, 35), _z(poses, "T12") + rng.uniform(-10, 15)
    zc, zs = 0.5 * (z_top + z_bot), 0.5 * (z_top - z_bot)
    domes = {}
    base = float(rng.uniform(45, 80))
    for side in (-1.0, 1.0):  # -1: patient left (RAS x < 0)
        c = np.array([side * 0.45 * sx_t * rng.uniform(0.92, 1.05), cy + 0.05 * sy_t, zc])
        s = np.array([0.36 * sx_t * rng.uniform(0.9, 1.1), 0.7 * sy_t * rng.uniform(0.9, 1.05), zs])
        dome = base + (float(rng.uniform(10, 20)) if side > 0 else 0.0)  # the liver lifts the right one
        domes["right" if side > 0 else "left"] = round(dome, 1)
        sl, pts = sub_grid(c - s, c + s, affine, shape)
        if pts.size == 0:
            continue
        # The diaphragm rises towards the dome's centre (front of the lung, off the midline): the
        # lung reaches lowest at its back and sides, as the posterior recesses do.
        r2 = ((pts[:, 0] - side * 0.4 * sx_t) / (0.35 * sx_t)) ** 2 + (
            (pts[:, 1] - cy - 0.2 * sy_t) / (0.6 * sy_t)
        ) ** 2
        inside = ellipsoid_inside(pts, c, s) & (pts[:, 2] > z_bot + dome * np.exp(-r2))
        inside &= (pts[:, 0] / ax) ** 2 + ((pts[:, 1] - cy) / ay) ** 2 <= 1.0  # within the rib cage
        sub = hu[sl].reshape(-1)
        inside &= _in_body(sub)
        sub[inside] = LUNG_HU + _texture(pts[inside], c - s, c + s, rng, amplitude=70.0)
        hu[sl] = sub.reshape(hu[sl].shape)
    zh = _z(poses, "T5") * 0.5 + _z(poses, "T6") * 0.5
    n_vessels = 0
    for side in (-1.0, 1.0):
        hilum = np.array([side * rng.uniform(30, 45), cy + rng.uniform(-0.05, 0.15) * sy_t, zh])
        for _ in range(int(rng.integers(22, 36))):
            d = rng.normal(0, 1, 3) + np.array([side * 1.2, 0.0, 0.0])
            d /= np.linalg.norm(d)
            length = rng.uniform(40, 110)
            ctrl = hilum + np.outer([0.0, 0.35, 0.7, 1.0], d * length) + rng.normal(0, 8, (4, 3)) * [[0], [1], [1], [1]]
            path = bezier(ctrl, 8)
            r = float(rng.uniform(1.5, 4.0))
            value = float(rng.uniform(-250, SOFT_HU))
            draw_tube(hu, affine, shape, path[:5], r, value, where=_in_lung)
            draw_tube(hu, affine, shape, path[4:], max(0.8, 0.5 * r), value, where=_in_lung)
            n_vessels += 1
    heart_c = np.array(
        [-rng.uniform(0.05, 0.2) * sx_t, cy + rng.uniform(0.25, 0.4) * sy_t, 0.5 * (_z(poses, "T7") + _z(poses, "T9"))]
    )
    heart_s = rng.uniform([50, 40, 50], [70, 55, 70])
    sl, pts = sub_grid(heart_c - heart_s, heart_c + heart_s, affine, shape)
    if pts.size:
        inside = ellipsoid_inside(pts, heart_c, heart_s).reshape(hu[sl].shape) & _in_chest(hu[sl])
        hu[sl][inside] = SOFT_HU
    # Aorta: ascending at the heart's top, the arch over the left main bronchus, descending at the
    # left front of the vertebral bodies.
    r_ao = float(rng.uniform(10, 14))
    # The arch's top lies left of the trachea (which runs at x 0-6 mm), over the left main bronchus.
    arch_top = np.array([-rng.uniform(20, 30), cy + 0.1 * sy_t, 0.5 * (_z(poses, "T3") + _z(poses, "T4")) + 10])
    desc = [
        _front(poses, params, lv) + [-rng.uniform(18, 28), -rng.uniform(0, 10), 0.0]
        for lv in ("T5", "T7", "T9", "T11", "T12")
    ]
    ascending = np.array([rng.uniform(5, 15), cy + 0.25 * sy_t, _z(poses, "T6")])
    arch = bezier(np.stack([ascending, arch_top, desc[0] + [0, 0, 25], desc[0]]), 10)
    draw_tube(hu, affine, shape, arch, r_ao, SOFT_HU, where=_in_chest)
    draw_tube(hu, affine, shape, bezier(np.stack(desc), 10), r_ao, SOFT_HU, where=_in_chest)
    # Trachea in front of the upper thoracic bodies, dividing at about T5.
    r_tr = float(rng.uniform(7.5, 10.5))
    shift = rng.uniform(12, 20)
    track = [_front(poses, params, lv) + [rng.uniform(0, 6), shift + r_tr, 0.0] for lv in ("T1", "T3", "T5")]
    top = track[0] + [0.0, 5.0, 60.0]
    carina = track[2] + [0.0, 0.0, 5.0]
    draw_tube(hu, affine, shape, bezier(np.stack([top, track[0], track[1], carina]), 10), r_tr, AIR_HU, where=_in_body)
    for side in (-1.0, 1.0):
        end = carina + [side * rng.uniform(35, 50), 5.0, -rng.uniform(15, 30)]
        draw_tube(hu, affine, shape, np.stack([carina, end]), 0.65 * r_tr, AIR_HU, where=_in_body)
    return {
        "diaphragm_dome_mm": domes,
        "lung_vessels": n_vessels,
        "heart_centre_mm": [round(float(v), 1) for v in heart_c],
        "heart_semi_mm": [round(float(v), 1) for v in heart_s],
        "aorta_radius_mm": round(r_ao, 1),
        "trachea_radius_mm": round(r_tr, 1),
    }


def _texture(pts: np.ndarray, lo, hi, rng: np.random.Generator, amplitude: float, cell: float = 14.0) -> np.ndarray:
    """A slow random density field at ``pts`` (trilinear over a ``cell``-mm lattice): a lung's
    density is not one number."""
    from scipy.ndimage import map_coordinates

    n = np.maximum(2, np.ceil((np.asarray(hi) - np.asarray(lo)) / cell).astype(int) + 2)
    lattice = rng.uniform(-amplitude, amplitude, tuple(n))
    coords = ((pts - np.asarray(lo)) / cell).T
    return map_coordinates(lattice, coords, order=1, mode="nearest").astype(np.float32)


def rib_path(
    start: np.ndarray, side: float, torso: dict[str, float], level_number: int, drop: float
) -> tuple[np.ndarray, int]:
    """A rib from its transverse-process tip around the inside of the body wall to its front end,
    and the index where its costal cartilage begins (= len for the floating ribs). Ribs 1-7 end at
    the sternum's edge, 8-10 short of it (their cartilages join the ones above), 11-12 at the side."""
    cy = torso["centre_y_mm"]
    ax, ay = _ring(torso)
    a0 = np.arctan2((start[1] - cy) / ay, side * start[0] / ax)
    a_front = np.arccos(np.clip(22.0 / ax, 0.0, 1.0))  # x ≈ ±22 mm: the sternum's edge
    reach = 1.0 if level_number <= 7 else (0.85 if level_number <= 10 else 0.45)
    angles = np.linspace(a0, a0 + reach * (a_front - a0), 16)
    z = start[2] - drop * np.linspace(0.0, 1.0, 16) ** 1.3
    path = np.stack([side * ax * np.cos(angles), cy + ay * np.sin(angles), z], axis=1)
    path = np.vstack([start, path[1:]])
    cartilage = len(path) if level_number >= 11 else (10 if level_number <= 7 else 12)
    return path, cartilage


def draw_rib(hu, affine, shape, path: np.ndarray, cartilage: int, radius: float, rng: np.random.Generator) -> None:
    """A rib's bone (cortex over cancellous bone) and its costal cartilage (soft, sometimes calcified)."""
    draw_bone_tube(hu, affine, shape, path[: cartilage + 1], radius, rng.uniform(550, 900), rng.uniform(80, 220))
    if cartilage < len(path) - 1:
        draw_tube(hu, affine, shape, path[cartilage:], 0.8 * radius, rng.uniform(90, 250), where=_in_body)


def bones(hu, affine, shape, poses, params, torso: dict[str, float], rng: np.random.Generator) -> dict[str, Any]:
    """Sternum, clavicles, scapulae and humeral heads (drawn after the ribs, before the vertebrae)."""
    sx_t, sy_t, cy, fat = torso["semi_x_mm"], torso["semi_y_mm"], torso["centre_y_mm"], torso["fat_mm"]
    z_notch = 0.5 * (_z(poses, "T2") + _z(poses, "T3"))
    z_xiphoid = 0.5 * (_z(poses, "T9") + _z(poses, "T10")) + rng.uniform(-10, 10)
    y_top = cy + 0.88 * (sy_t - fat)
    width, r_st = rng.uniform(26, 36), rng.uniform(5.5, 7.0)
    # The sternum leans forward going down, staying under the skin.
    y_bot = min(y_top + rng.uniform(5, 25), cy + sy_t - r_st - 4.0)
    cort, canc = rng.uniform(450, 750), rng.uniform(100, 220)
    columns = [
        np.stack(
            [[dx, y_top, z_notch], [dx, 0.5 * (y_top + y_bot) + 3, 0.5 * (z_notch + z_xiphoid)], [dx, y_bot, z_xiphoid]]
        )
        for dx in np.linspace(-width / 2 + r_st, width / 2 - r_st, 3)
    ]
    manubrium = [np.stack([[dx, y_top, z_notch], [dx, y_top + 3, z_notch - 45]]) for dx in (-20.0, 20.0)]
    paths = [bezier(c, 8) for c in columns] + manubrium
    for path in paths:  # cortices first, then the joint cancellous core
        draw_tube(hu, affine, shape, path, r_st, cort)
    for path in paths:
        draw_tube(hu, affine, shape, path, r_st - 1.5, canc)
    arms_up = bool(rng.random() < 0.6)
    ax, ay = _ring(torso)

    def outside_cage(p: np.ndarray) -> np.ndarray:
        return (p[:, 0] / ax) ** 2 + ((p[:, 1] - cy) / ay) ** 2 > 1.0

    out: dict[str, Any] = {"sternum_mm": [round(float(z_notch), 1), round(float(z_xiphoid), 1)], "arms_up": arms_up}
    for side in (-1.0, 1.0):
        z_ac = z_notch + rng.uniform(15, 35)
        acromion = np.array([side * 0.85 * sx_t, cy - 0.25 * sy_t, z_ac])
        clavicle = bezier(
            np.stack(
                [
                    [side * rng.uniform(15, 25), y_top + 2, z_notch + 5],
                    [side * 0.35 * sx_t, y_top + 15, z_notch + 10],
                    [side * 0.6 * sx_t, cy - 0.05 * sy_t, z_notch + 20],
                    acromion,
                ]
            ),
            12,
        )
        draw_bone_tube(hu, affine, shape, clavicle, rng.uniform(5, 7), rng.uniform(600, 900), rng.uniform(100, 250))
        # The blade lies on the back of the rib cage, its lateral angle (glenoid) forward at the side.
        gap = rng.uniform(8, 16)
        x_sup, x_inf, x_gl = side * rng.uniform(50, 70), side * rng.uniform(70, 100), side * 0.8 * sx_t
        superior = np.array([x_sup, _ring_back(torso, x_sup) - gap, _z(poses, "T2") + rng.uniform(-5, 15)])
        inferior = np.array([x_inf, _ring_back(torso, x_inf) - gap, 0.5 * (_z(poses, "T7") + _z(poses, "T8"))])
        glenoid = np.array([x_gl, _ring_back(torso, x_gl) + rng.uniform(0, 25), z_notch + rng.uniform(0, 20)])
        # A flat blade between points behind the rib cage still cuts the cage where it curves: only
        # the part outside it is drawn, and the borders never overwrite lung.
        _triangle(hu, affine, shape, superior, inferior, glenoid, rng.uniform(2.5, 4.0), rng.uniform(500, 800),
                  keep=outside_cage)  # fmt: skip
        border = np.stack([glenoid, inferior])
        draw_tube(hu, affine, shape, border, rng.uniform(4, 6), 800.0, where=_outside_lung)
        spine_start = superior + (inferior - superior) / 3
        crest = np.stack([spine_start, superior * [1, 1, 0] + [0, -8, glenoid[2]], acromion])
        draw_tube(hu, affine, shape, bezier(crest, 8), rng.uniform(4, 5), 800.0, where=_outside_lung)
        head = glenoid + [side * rng.uniform(18, 25), rng.uniform(-5, 10), 0.0]
        r_head = float(rng.uniform(20, 25))
        _ball(
            hu, affine, shape, head, r_head + 22, SOFT_HU, where=lambda v: v < FAT_HU - 1
        )  # deltoid, outside the torso
        _ball(hu, affine, shape, head, r_head, rng.uniform(600, 900))
        _ball(hu, affine, shape, head, r_head - 2, rng.uniform(120, 250))
        shaft_dir = np.array([side * 0.5, 0.0, 1.0]) if arms_up else np.array([side * 0.15, 0.0, -1.0])
        shaft = np.stack([head, head + 150 * shaft_dir / np.linalg.norm(shaft_dir)])
        draw_tube(hu, affine, shape, shaft, 38.0, SOFT_HU, where=lambda v: v < FAT_HU - 1)  # the arm's muscle
        draw_bone_tube(hu, affine, shape, shaft, rng.uniform(10, 13), rng.uniform(900, 1300), rng.uniform(-50, 60))
    return out


def _ball(hu, affine, shape, centre, radius: float, value: float, where=None) -> None:
    sl, pts = sub_grid(np.asarray(centre) - radius, np.asarray(centre) + radius, affine, shape)
    if pts.size == 0:
        return
    inside = ellipsoid_inside(pts, centre, [radius] * 3).reshape(hu[sl].shape)
    if where is not None:
        inside &= where(hu[sl])
    hu[sl][inside] = value


def _triangle(hu, affine, shape, a, b, c, thickness: float, value: float, keep=None) -> None:
    """A flat plate of ``thickness`` over the triangle abc (a scapula's blade); ``keep``: only the
    points (world, N×3) it accepts."""
    lo, hi = np.minimum.reduce([a, b, c]) - thickness, np.maximum.reduce([a, b, c]) + thickness
    sl, pts = sub_grid(lo, hi, affine, shape)
    if pts.size == 0:
        return
    e1, e2 = b - a, c - a
    n = np.cross(e1, e2)
    if np.linalg.norm(n) < 1e-6:  # degenerate (collinear corners): no plate
        return
    n /= np.linalg.norm(n)
    q = pts - a
    # Barycentric coordinates of each point's projection on the plane.
    g = np.array([[e1 @ e1, e1 @ e2], [e1 @ e2, e2 @ e2]])
    uv = np.linalg.solve(g, np.stack([q @ e1, q @ e2]))
    inside = (np.abs(q @ n) <= thickness / 2) & (uv[0] >= 0) & (uv[1] >= 0) & (uv.sum(0) <= 1)
    if keep is not None:
        inside &= keep(pts)
    hu[sl][inside.reshape(hu[sl].shape)] = value
