"""How safe is a cannula in a vertebra: Gertzbein–Robbins breach grade, clearances, tip position.

Everything is measured against a closed vertebra surface (the fitted instance when planning, the
true vertebra when the benchmark judges the planner). The surface is the **outer** cortical surface;
the cortex is ~1 mm thick, so a clearance of 1 mm to it keeps the cannula in the cancellous core.

Breach (research/anatomy.md §3): the largest distance by which the cannula cylinder's wall lies
outside the bone along its intraosseous part. Where the cannula goes in, its wall necessarily
crosses the posterior cortex obliquely (a funnel r·tan θ long for an axis at θ to the surface
normal); that stretch is the entry, not a breach, and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..anatomy.vertebra import PART_NAMES
from ..meshing import SignedDistance, orient_outward
from ..surface import distance_to_trimesh
from .cannula import Cannula

GRADES = ("A", "B", "C", "D", "E")
RING_POINTS = 16  # samples around the cylinder wall
STEP_MM = 0.5  # rings along the axis
MAX_ENTRY_SKIP_MM = 8.0
ISTHMUS_LEAD_MM = 5.0  # clearances count from this far before the isthmus


def gr_grade(breach_mm: float) -> str:
    """Modified Gertzbein–Robbins: A inside, B < 2 mm, C < 4 mm, D < 6 mm, E ≥ 6 mm outside."""
    if breach_mm <= 0.0:
        return "A"
    return GRADES[min(1 + int(breach_mm // 2.0), 4)]


@dataclass
class Bone:
    """A vertebra surface (RAS mm) with optional per-vertex part labels and its landmarks
    (at least VAP and PWM; PCL, PCR and BC for the fluoroscopic rule)."""

    vertices: np.ndarray
    faces: np.ndarray
    landmarks: dict[str, np.ndarray]
    part_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, float)
        self.faces = orient_outward(self.vertices, self.faces)
        self.signed = SignedDistance(self.vertices, self.faces)
        self._mesh = None
        self._parts: dict[str, Any] = {}

    @property
    def mesh(self):
        """The whole surface as a ``trimesh.Trimesh`` (built once: its search tree is reused)."""
        if self._mesh is None:
            import trimesh

            self._mesh = trimesh.Trimesh(self.vertices, self.faces, process=False)
        return self._mesh

    def part_mesh(self, part: str):
        """A trimesh of the faces whose vertices are mostly labelled ``part`` (None if unlabelled)."""
        if part not in self._parts:
            import trimesh

            mesh = None
            if self.part_labels is not None:
                lab = np.asarray(self.part_labels)[self.faces] == PART_NAMES.index(part)
                f = self.faces[lab.sum(1) >= 2]
                if len(f):
                    mesh = trimesh.Trimesh(self.vertices, f, process=False)
            self._parts[part] = mesh
        return self._parts[part]

    def part_clearance(self, part: str, points: np.ndarray, signed: np.ndarray) -> float | None:
        """Smallest distance of ``points`` to the part's surface; a point outside the bone counts
        negative when this part is the surface it broke through (its nearest), else not at all."""
        mesh = self.part_mesh(part)
        if mesh is None:
            return None
        d = distance_to_trimesh(points, mesh)
        return float(np.min(np.where(signed < 0, d, np.where(d <= signed + 0.5, -d, np.inf))))

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The anatomical frame's x (patient right), y (anterior), z (cranial) unit vectors."""
        lm = self.landmarks
        y = np.asarray(lm["VAP"], float) - np.asarray(lm["PWM"], float)
        y /= np.linalg.norm(y)
        x = np.asarray(lm["PCR"], float) - np.asarray(lm["PCL"], float)
        x -= (x @ y) * y
        x /= np.linalg.norm(x)
        return x, y, np.cross(x, y)


@dataclass
class CannulaCheck:
    """A cannula measured against one vertebra surface."""

    breach_mm: float
    grade: str
    clearance_mm: float  # smallest depth of the wall inside the bone (negative: a breach)
    clearance_pedicle_mm: float | None  # to the pedicle's own wall (part labels), same sign
    clearance_canal_mm: float | None  # to the spinal canal's wall
    tip_depth: float  # tip along posterior body wall (0) → anterior body point (1)
    tip_inside: bool

    @property
    def tip_ok(self) -> bool:
        """Tip inside the bone, in the anterior half of the body, not past the anterior cortex."""
        return self.tip_inside and 0.5 <= self.tip_depth <= 1.0

    def to_dict(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(float(x), 3)  # noqa: E731
        return {
            "breach_mm": r(self.breach_mm),
            "grade": self.grade,
            "clearance_mm": r(self.clearance_mm),
            "clearance_pedicle_mm": r(self.clearance_pedicle_mm),
            "clearance_canal_mm": r(self.clearance_canal_mm),
            "tip_depth": r(self.tip_depth),
            "tip_inside": self.tip_inside,
            "tip_ok": self.tip_ok,
        }


def _perpendiculars(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, a)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def _incidence_cos(bone: Bone, point: np.ndarray, direction: np.ndarray) -> float:
    """|cos θ| between the axis and the surface normal nearest to ``point``."""
    import trimesh

    _, _, tri = trimesh.proximity.closest_point(bone.mesh, point[None])
    return max(abs(float(bone.mesh.face_normals[int(tri[0])] @ direction)), 1e-3)


def check_cannula(bone: Bone, c: Cannula, margin_mm: float = 1.0) -> CannulaCheck:
    """Breach grade, clearances and tip position of a cannula against a vertebra surface.

    The intraosseous part starts where the axis first enters the bone (a planned entry may lie
    outside the true surface). Past the entry funnel the wall must be inside the bone (breach); on a
    flat cortex at incidence θ a wall point is s·cos θ − r·sin θ deep at s along the axis, so that
    stretch is skipped (capped at 8 mm). Clearances are the wall's depth from 5 mm before the pedicle
    isthmus on (and at least ``margin_mm`` past the funnel): nearer the entry they only measure how
    obliquely the cannula goes in.
    """
    s_axis = np.append(np.arange(0.0, c.length_mm, STEP_MM / 2), c.length_mm)
    inside = bone.signed(c.entry + s_axis[:, None] * c.direction) < 0
    if not inside.any():
        x_ = float(-bone.signed(c.target[None])[0])
        return CannulaCheck(np.inf, "E", x_, None, None, _tip_depth(bone, c), False)
    s_in = float(s_axis[np.argmax(inside)])
    cos = _incidence_cos(bone, c.entry + s_in * c.direction, c.direction)
    sin = np.sqrt(max(1.0 - cos * cos, 0.0))

    def skip(depth: float) -> float:
        return s_in + float(min((depth + c.radius_mm * sin) / cos + STEP_MM, MAX_ENTRY_SKIP_MM, 0.5 * c.length_mm))

    s = np.append(np.arange(skip(0.0), c.length_mm, STEP_MM), c.length_mm)
    u, w = _perpendiculars(c.direction)
    ang = 2 * np.pi * np.arange(RING_POINTS) / RING_POINTS
    ring = c.radius_mm * (np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * w)
    wall = c.entry + s[:, None, None] * c.direction + ring[None]
    sd = bone.signed(wall.reshape(-1, 3)).reshape(len(s), RING_POINTS)
    breach = max(0.0, float(sd.max()))
    # Clearances from a little before the pedicle isthmus (the narrowest section) on: between the
    # entry and there the wall is still coming through the posterior cortex.
    isthmus = np.asarray(bone.landmarks["PCL" if c.side == "left" else "PCR"], float)
    s_isthmus = float((isthmus - c.entry) @ c.direction)
    deep = s >= max(skip(margin_mm), s_isthmus - ISTHMUS_LEAD_MM)
    if not deep.any():
        deep[-1] = True
    wall_d, sd_d = wall[deep].reshape(-1, 3), sd[deep].ravel()
    return CannulaCheck(
        breach_mm=breach,
        grade=gr_grade(breach),
        clearance_mm=float(-sd_d.max()),
        clearance_pedicle_mm=bone.part_clearance(f"pedicle_{c.side}", wall_d, sd_d),
        clearance_canal_mm=bone.part_clearance("canal_wall", wall_d, sd_d),
        tip_depth=_tip_depth(bone, c),
        tip_inside=bool(bone.signed(c.target[None])[0] < 0),
    )


def _tip_depth(bone: Bone, c: Cannula) -> float:
    _, y, _ = bone.axes()
    pwm, vap = np.asarray(bone.landmarks["PWM"], float), np.asarray(bone.landmarks["VAP"], float)
    return float((c.target - pwm) @ y / max((vap - pwm) @ y, 1e-6))
