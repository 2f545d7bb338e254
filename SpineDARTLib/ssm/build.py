"""Building a shape model from member surfaces: correspondences by landmark-initialised rigid
alignment, coherent point drift (``pycpd``) of a template onto each member, closest-point
refinement at full resolution, a per-member quality gate, then PCA (:mod:`.pca`), iterated with
the current mean as the template until the mean moves less than 0.1 mm.

Members carry their annotation points (the 10 landmarks and the entry/target points, computed by
the ground-truth rules on each member): they enter the PCA as extra points.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_npz
from ..errors import UserError
from .model import ShapeModel
from .pca import _rigid, pca_model

CPD_POINTS = 1000  # subsample for the deformable registration (O(M³) per iteration)
CPD_BETA_MM = 12.0  # width of the coherent motion kernel
CPD_ALPHA = 2.0
MAX_RESIDUAL_MM = 1.5  # quality gate: mean member-to-correspondence surface distance
CONVERGED_MM = 0.1
# Bump when the correspondence algorithm changes: cached correspondences of older builds are void.
ALGORITHM = "cpd-deformable/2"  # 2: BLAS on one thread


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


def _digest(*arrays: np.ndarray, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _one_blas_thread():
    """BLAS on one thread while registering and averaging: OpenBLAS splits its reductions by the
    thread count, so a build on 2 threads differed in the last bits from one on 1 thread (measured:
    the CI's spawned workers inherited OPENBLAS_NUM_THREADS=1 from dask and built another model).
    One thread makes the model the same on any core count, serial or in workers (~13 % slower
    serially on 2 cores, none in 2 workers)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _cached_correspond(
    template: tuple[np.ndarray, np.ndarray, np.ndarray], member: Member, seed: int, cache_dir: Path | None
) -> tuple[np.ndarray, float]:
    """:func:`correspond` with its own random stream (from the member's content, so a member's
    correspondence does not depend on which members came before it) and, with ``cache_dir``, one
    file per (template, member): an interrupted build resumes where it stopped."""
    key_t = _digest(*template, extra=f"{ALGORITHM}:{seed}")[:16]
    key_m = _digest(member.vertices, member.faces, member.annotations)[:16]
    rng = np.random.default_rng([int(seed), int(key_m[:8], 16), int(key_t[:8], 16)])
    path = None if cache_dir is None else Path(cache_dir) / f"{key_t}-{key_m}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                return z["vertices"], float(z["residual"])
        except Exception:  # a torn or foreign file: recompute and overwrite
            pass
    with _one_blas_thread():
        v, residual = correspond(*template, member, rng)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_npz(path, {"vertices": v, "residual": np.array(residual)})
    return v, residual


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
    progress: Callable[[int, int, int, str], None] | None = None,
    card: dict | None = None,
    cache_dir: Path | None = None,
    details: dict | None = None,
    workers: int = 1,
) -> tuple[ShapeModel, list[dict]]:
    """The model and the list of excluded members ({name, residual_mm}). Raises when too few
    members pass the quality gate for ``n_modes``. The model is in the template's frame (the
    generator's anatomical frame when the template is a generated vertebra). ``progress`` is
    called after each member with (iteration, members done, members, message). ``details``, if
    given, receives the last round's corresponded members (``rows``, ``names``, ``levels``): the
    quality report's leave-one-out and specificity work on them. ``workers`` > 1 registers the
    members in that many processes; each member has its own random stream, so the model is the
    same whatever the number."""
    if workers < 1:
        raise UserError(f"workers {workers} must be positive", "give e.g. workers=2")
    if len(members) < n_modes + 1:
        raise UserError(f"{len(members)} members cannot give {n_modes} modes", f"give at least {n_modes + 1} members")
    tv = np.asarray(template_vertices, float)
    ta = np.asarray(template_annotations, float)
    tf = np.asarray(template_faces, np.int64)
    model = None
    excluded: list[dict] = []
    reference = np.vstack([tv, ta])
    with ExitStack() as stack:
        pool = None
        if workers > 1:
            # spawn, not fork: BLAS and torch threads in the parent do not survive a fork cleanly.
            ctx = mp.get_context("spawn")
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, len(members)), mp_context=ctx))
        for it in range(iterations):
            template = (tv, tf, ta)
            if pool is None:
                results = (_cached_correspond(template, m, seed, cache_dir) for m in members)
            else:  # map keeps the members' order: the same rows, excluded list and progress as one process
                n = len(members)
                results = pool.map(_cached_correspond, [template] * n, members, [seed] * n, [cache_dir] * n)
            rows, levels, names, excluded = [], [], [], []
            for k, (m, (v, residual)) in enumerate(zip(members, results, strict=True)):
                if progress:
                    progress(it + 1, k + 1, len(members), f"{m.name} residual {residual:.2f} mm")
                if residual > MAX_RESIDUAL_MM:
                    excluded.append({"name": m.name, "residual_mm": round(residual, 3)})
                    continue
                rows.append(np.vstack([v, m.annotations]))
                levels.append(m.level)
                names.append(m.name)
            if len(rows) < n_modes + 1:
                raise UserError(
                    f"only {len(rows)} members passed the {MAX_RESIDUAL_MM} mm quality gate",
                    "check the excluded members' meshes, or ask for fewer modes",
                )
            with _one_blas_thread():
                new = pca_model(
                    np.stack(rows), template_faces, template_labels, len(tv), annotation_names, levels, n_modes,
                    card=card, reference=reference,
                )  # fmt: skip
            moved = np.inf if model is None else float(np.abs(new.mean[: len(tv)] - model.mean[: len(tv)]).max())
            model = new
            # The next round registers the current mean instead.
            tv = model.mean[: len(tv)]
            ta = model.mean[model.annotation_slice]
            model.card.update(iterations_run=it + 1, mean_change_mm=None if np.isinf(moved) else round(moved, 4))
            if moved < CONVERGED_MM:
                break
    model.card["excluded_members"] = excluded
    if details is not None:
        details.update(rows=np.stack(rows), names=names, levels=levels)
    return model, excluded
