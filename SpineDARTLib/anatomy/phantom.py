"""A generated vertebra as data: watertight mesh with part labels, and a partial-volume density
volume (HU) with a cortical shell over a cancellous core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..meshing import grid_points, grid_spec
from .vertebra import PART_NAMES, VertebraParams, VertebraSDF, sample_params

PMMA_HU = 2800.0
MESH_SPACING_MM = (0.2, 3.0)
VOLUME_SPACING_MM = (0.1, 2.0)


def check_spacings(mesh_spacing_mm: float | None = None, volume_spacing_mm: float | None = None) -> None:
    """One-line errors for grid spacings out of range (checked before any work is done)."""
    for name, value, (lo, hi) in (
        ("mesh spacing", mesh_spacing_mm, MESH_SPACING_MM),
        ("volume spacing", volume_spacing_mm, VOLUME_SPACING_MM),
    ):
        if value is not None and not lo <= value <= hi:
            raise UserError(f"{name} {value} mm is out of range", f"give {lo:g} to {hi:g} mm")


@dataclass
class Phantom:
    params: VertebraParams
    vertices: np.ndarray  # (N, 3) RAS mm
    faces: np.ndarray  # (F, 3), outward
    labels: np.ndarray  # (N,) index into PART_NAMES
    model: VertebraSDF

    @property
    def label_names(self) -> tuple[str, ...]:
        return PART_NAMES


def _evaluate(fn, pts: np.ndarray, chunk: int = 400_000) -> np.ndarray:
    if len(pts) == 0:
        return np.zeros(0)
    return np.concatenate([fn(pts[i : i + chunk]) for i in range(0, len(pts), chunk)])


COARSE_STEP = 3  # grid cells per coarse cell in sdf_on_grid


def sdf_on_grid(fn, lo: np.ndarray, shape: tuple[int, int, int], spacing: float, band_mm: float | None = None):
    """A signed-distance function sampled on a regular grid (origin ``lo``, axis-aligned), exactly
    within ``band_mm`` of the surface and interpolated from a 3× coarser grid elsewhere. Marching
    cubes, occupancy and the cortex need exact values only near the surface; the far field keeps
    its sign. The band (default: 2 coarse cells + 2 mm) is wide enough for the interpolation error
    of a distance-like function, whose gradient stays ≤ ~1.8 here (warps included)."""
    from scipy.ndimage import map_coordinates

    shape = tuple(int(n) for n in shape)
    lo = np.asarray(lo, float)
    step = COARSE_STEP
    idx = [np.unique(np.r_[np.arange(0, n, step), n - 1]) for n in shape]
    if min(len(i) for i in idx) < 3:  # too small to be worth it
        axes = [lo[a] + spacing * np.arange(shape[a]) for a in range(3)]
        pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        return _evaluate(fn, pts).reshape(shape)
    axes = [lo[a] + spacing * idx[a] for a in range(3)]
    coarse = _evaluate(fn, np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3))
    coarse = coarse.reshape(tuple(len(i) for i in idx))
    # Fractional coarse coordinates of every fine index (the last coarse sample may be closer).
    frac = [np.interp(np.arange(n), i, np.arange(len(i))) for n, i in zip(shape, idx, strict=True)]
    grid = np.meshgrid(*frac, indexing="ij")
    d = map_coordinates(coarse, [g.ravel() for g in grid], order=1, mode="nearest").reshape(shape)
    band = band_mm if band_mm is not None else 2 * step * spacing + 2.0
    near = np.abs(d) < band
    ijk = np.argwhere(near)
    d[near] = _evaluate(fn, ijk * spacing + lo)
    return d


def generate(
    level: str,
    seed: int,
    mesh_spacing_mm: float = 0.75,
    fracture: str | None = None,
    osteoporotic: bool = False,
    cemented: bool = False,
    params: VertebraParams | None = None,
    warp_mm: float = 0.0,
) -> Phantom:
    """Generate one vertebra: surface by marching cubes of its signed-distance model, largest
    component only, triangles facing outwards, a part label per vertex."""
    from skimage.measure import label as cc_label
    from skimage.measure import marching_cubes

    from ..meshing import orient_outward

    check_spacings(mesh_spacing_mm=mesh_spacing_mm)
    pr = params if params is not None else sample_params(level, seed, fracture, osteoporotic, cemented, warp_mm)
    model = VertebraSDF(pr)
    lo, hi = model.bounds()
    shape, affine = grid_spec(lo, hi, mesh_spacing_mm)
    d = sdf_on_grid(model, lo, shape, mesh_spacing_mm)
    # Keep the largest solid component: a generator must never emit floating fragments.
    comp = cc_label(d < 0, connectivity=1)
    if comp.max() > 1:
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        d = np.where((comp == sizes.argmax()) | (d >= 0), d, np.abs(d))
    verts, faces, _, _ = marching_cubes(d, level=0.0, spacing=(mesh_spacing_mm,) * 3)
    verts = verts + lo
    faces = orient_outward(verts, faces)
    parts = model.parts(verts)
    names = PART_NAMES[:-1]
    labels = np.argmin(np.stack([parts[n] for n in names], axis=1), axis=1)
    canal = model.canal(verts)
    labels[np.abs(canal) < 0.5 * mesh_spacing_mm + 0.3] = PART_NAMES.index("canal_wall")
    return Phantom(pr, verts, np.ascontiguousarray(faces), labels.astype(np.int16), model)


def density_volume(ph: Phantom, spacing_mm: float = 0.5, background_hu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """HU volume (I, J, K) and its IJK→RAS matrix: partial-volume occupancy × (cortical HU within
    the cortex thickness of the surface, cancellous HU deeper), the canal empty, PMMA if cemented."""
    from scipy.ndimage import distance_transform_edt

    check_spacings(volume_spacing_mm=spacing_mm)
    lo, hi = ph.model.bounds()
    shape, affine = grid_spec(lo, hi, spacing_mm)
    d = sdf_on_grid(ph.model, lo, shape, spacing_mm)
    occupancy = np.clip(0.5 - d / spacing_mm, 0.0, 1.0)
    depth = distance_transform_edt(d < 0, sampling=spacing_mm)
    pr = ph.params
    bone = np.where(depth <= pr.cortex_mm, pr.cortical_hu, pr.cancellous_hu)
    if pr.cemented:  # the only use of the grid's points: built only then
        cement = _evaluate(ph.model.cement, grid_points(lo, hi, spacing_mm)[0]).reshape(shape)
        bone = np.where((cement < 0) & (depth > pr.cortex_mm), PMMA_HU, bone)
    hu = background_hu + occupancy * (bone - background_hu)
    return hu.astype(np.float32), affine
