"""Building a shape model from member surfaces: correspondences by landmark-initialised rigid
alignment, coherent point drift (``pycpd``) of a template onto each member, closest-point
refinement at full resolution, a per-member quality gate, then PCA (:mod:`.pca`), iterated with
the current mean as the template until the mean moves less than 0.1 mm.

Members carry their annotation points (the 10 landmarks and the entry/target points, computed by
the ground-truth rules on each member): they enter the PCA as extra points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from .model import ShapeModel
from .pca import _rigid, pca_model

CPD_POINTS = 1000  # subsample for the deformable registration (O(M³) per iteration)
CPD_BETA_MM = 12.0  # width of the coherent motion kernel
CPD_ALPHA = 2.0
MAX_RESIDUAL_MM = 1.5  # quality gate: mean member-to-correspondence surface distance
CONVERGED_MM = 0.1


@dataclass
class Member:
    name: str
    level: str
    vertices: np.ndarray  # (N, 3) RAS mm
    faces: np.ndarray
    annotations: np.ndarray  # (A, 3), in the model's annotation order
    sha256: str = ""

    def __post_init__(self) -> None:
        # Plain float arrays (pycpd refuses ndarray subclasses such as trimesh's TrackedArray).
        self.vertices = np.array(self.vertices, dtype=np.float64, subok=False)
        self.faces = np.array(self.faces, dtype=np.int64, subok=False)
        self.annotations = np.array(self.annotations, dtype=np.float64, subok=False)
        if not (np.isfinite(self.vertices).all() and np.isfinite(self.annotations).all()):
            raise UserError(f"member {self.name} has non-finite coordinates", "repair or drop that member")


def _subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return points if len(points) <= n else points[rng.choice(len(points), n, replace=False)]


def _kernel(a: np.ndarray, b: np.ndarray, beta: float) -> np.ndarray:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * beta**2))


def correspond(
    template_v: np.ndarray,
    template_f: np.ndarray,
    template_ann: np.ndarray,
    member: Member,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """The template's vertices moved onto the member (in the member's frame) and the mean distance
    from the member's surface to the corresponded surface (mm)."""
    import trimesh
    from pycpd import DeformableRegistration
    from scipy.spatial import cKDTree

    from ..surface import distance_to_mesh

    # 1. Rigid start from the rule landmarks (they correspond by definition), no scale.
    R, t = _rigid(template_ann[:10], member.annotations[:10])
    moved = template_v @ R.T + t
    # 2. Coherent point drift of a template subsample onto a member subsample; the displacement
    #    carried to every template vertex through the same Gaussian kernel (pycpd moves only the
    #    points it was given).
    idx = rng.choice(len(moved), min(CPD_POINTS, len(moved)), replace=False)
    target = _subsample(member.vertices, int(1.5 * CPD_POINTS), rng)
    reg = DeformableRegistration(X=target, Y=moved[idx], alpha=CPD_ALPHA, beta=CPD_BETA_MM, max_iterations=60)
    reg.register()
    full = moved.copy()
    for i in range(0, len(moved), 4000):
        full[i : i + 4000] += _kernel(moved[i : i + 4000], moved[idx], CPD_BETA_MM) @ reg.W
    # The quality gate measures the smooth (coherent) deformation, before any snapping: closest
    # points would put a template onto any surface at all, a ball included.
    probe = _subsample(member.vertices, 4000, rng)
    residual = float(distance_to_mesh(probe, full, template_f).mean())
    # 3. Closest points on the member at full resolution, with the displacement smoothed over the
    #    template's neighbours so vertices do not bunch up in concavities.
    mesh = trimesh.Trimesh(member.vertices, member.faces, process=False)
    closest, _, _ = trimesh.proximity.closest_point(mesh, full)
    disp = closest - full
    _, nn = cKDTree(full).query(full, k=8)
    disp = disp[nn].mean(1)
    out = full + disp
    closest, _, _ = trimesh.proximity.closest_point(mesh, out)
    out = 0.5 * (out + closest)
    return out, residual


def build_model(
    members: Sequence[Member],
    template_vertices: np.ndarray,
    template_faces: np.ndarray,
    template_labels: np.ndarray,
    template_annotations: np.ndarray,
    annotation_names: Sequence[str],
    n_modes: int,
    seed: int = 0,
    iterations: int = 3,
    progress: Callable[[str], None] | None = None,
    card: dict | None = None,
) -> tuple[ShapeModel, list[dict]]:
    """The model and the list of excluded members ({name, residual_mm}). Raises when too few
    members pass the quality gate for ``n_modes``."""
    if len(members) < n_modes + 1:
        raise UserError(f"{len(members)} members cannot give {n_modes} modes", f"give at least {n_modes + 1} members")
    tv = np.asarray(template_vertices, float)
    ta = np.asarray(template_annotations, float)
    tf = np.asarray(template_faces, np.int64)
    model = None
    excluded: list[dict] = []
    for it in range(iterations):
        rng = np.random.default_rng([int(seed), it])
        rows, levels, excluded = [], [], []
        for k, m in enumerate(members):
            v, residual = correspond(tv, tf, ta, m, rng)
            if progress:
                progress(f"iteration {it + 1}: {k + 1}/{len(members)} {m.name} residual {residual:.2f} mm")
            if residual > MAX_RESIDUAL_MM:
                excluded.append({"name": m.name, "residual_mm": round(residual, 3)})
                continue
            rows.append(np.vstack([v, m.annotations]))
            levels.append(m.level)
        if len(rows) < n_modes + 1:
            raise UserError(
                f"only {len(rows)} members passed the {MAX_RESIDUAL_MM} mm quality gate",
                "check the excluded members' meshes, or ask for fewer modes",
            )
        new = pca_model(
            np.stack(rows), template_faces, template_labels, len(tv), annotation_names, levels, n_modes, card=card
        )
        moved = np.inf if model is None else float(np.abs(new.mean[: len(tv)] - model.mean[: len(tv)]).max())
        model = new
        # The next round registers the current mean (in the first member's frame) instead.
        tv = model.mean[: len(tv)]
        ta = model.mean[model.annotation_slice]
        if moved < CONVERGED_MM:
            break
    model.card["excluded_members"] = excluded
    return model, excluded
