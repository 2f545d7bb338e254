"""Meshes ↔ voxels: label masks to surfaces (marching cubes) and closed meshes to partial-volume
occupancy grids."""

from __future__ import annotations

import numpy as np

from .errors import UserError


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh (mm³), positive when the triangles face outwards."""
    v = np.asarray(vertices, float)
    f = np.asarray(faces, np.int64)
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def orient_outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces of a closed mesh, reversed if needed so that its normals point outwards."""
    f = np.asarray(faces, np.int64)
    return f[:, ::-1].copy() if signed_volume(vertices, f) < 0 else f


def signed_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) of points to a closed triangle mesh (VTK).

    VTK takes the sign from the triangles' orientation, so the mesh is first oriented outwards.
    """
    import vtk
    from vtk.util import numpy_support

    poly = _polydata(vertices, orient_outward(vertices, faces))
    f = vtk.vtkImplicitPolyDataDistance()
    f.SetInput(poly)
    pts = numpy_support.numpy_to_vtk(np.ascontiguousarray(points, dtype=np.float64), deep=True)
    out = vtk.vtkDoubleArray()
    f.FunctionValue(pts, out)
    return numpy_support.vtk_to_numpy(out).copy()


def _polydata(vertices: np.ndarray, faces: np.ndarray):
    import vtk
    from vtk.util import numpy_support

    pts = vtk.vtkPoints()
    pts.SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(vertices, dtype=np.float64), deep=True))
    f = np.asarray(faces, dtype=np.int64)
    cells = vtk.vtkCellArray()
    cells.SetData(
        numpy_support.numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(f) + 1, 3, dtype=np.int64), deep=True),
        numpy_support.numpy_to_vtkIdTypeArray(np.ascontiguousarray(f.ravel()), deep=True),
    )
    poly = vtk.vtkPolyData()
    poly.SetPoints(pts)
    poly.SetPolys(cells)
    return poly


def voxelize_mesh(
    vertices: np.ndarray, faces: np.ndarray, spacing_mm: float = 1.0, supersample: int = 3, margin_mm: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy in [0, 1] of each voxel (fraction of ``supersample``³ sub-points inside the mesh)
    and the voxel grid's IJK→RAS matrix (voxel centres, NIfTI convention). The grid covers the
    mesh's bounding box plus ``margin_mm``; voxels farther than one voxel diagonal from the surface
    are decided by their centre alone, so only the boundary band pays for the supersampling."""
    v = np.asarray(vertices, float)
    f = np.asarray(faces, np.int64)
    if len(v) < 4 or len(f) < 4:
        raise UserError("mesh is empty or too small to enclose a volume", "give a closed triangle mesh")
    if not (spacing_mm > 0 and supersample >= 1):
        raise UserError("voxel spacing and supersampling must be positive", "give e.g. spacing 1.0 mm, supersample 3")
    lo = v.min(0) - margin_mm
    shape = np.ceil((v.max(0) + margin_mm - lo) / spacing_mm).astype(int) + 1
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3) * spacing_mm
    affine[:3, 3] = lo
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    centres = idx * spacing_mm + lo
    d = signed_distance(v, f, centres)
    occ = (d < 0).astype(np.float64)
    band = np.abs(d) < spacing_mm * np.sqrt(3) / 2 + 1e-9
    if supersample > 1 and band.any():
        k = supersample
        sub = (np.arange(k) + 0.5) / k - 0.5
        offs = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), -1).reshape(-1, 3) * spacing_mm
        pts = (centres[band][:, None, :] + offs[None]).reshape(-1, 3)
        inside = signed_distance(v, f, pts).reshape(-1, len(offs)) < 0
        occ[band] = inside.mean(axis=1)
    return occ.reshape(shape), affine


def mesh_from_mask(mask: np.ndarray, ijk_to_ras: np.ndarray, level: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Surface of a binary mask: marching cubes at ``level`` on the mask's own grid, no smoothing
    (the protocol's ground-truth surface), vertices in RAS mm, faces oriented outwards."""
    from skimage.measure import marching_cubes

    m = np.asarray(mask, dtype=np.float32)
    if m.ndim != 3 or not (m > level).any():
        raise UserError("mask is empty or not 3-D", "give a 3-D label mask with the structure in it")
    # Pad so the surface closes where the structure touches the array border.
    verts, faces, _, _ = marching_cubes(np.pad(m, 1), level=level)
    verts -= 1.0
    A = np.asarray(ijk_to_ras, float)
    ras = verts @ A[:3, :3].T + A[:3, 3]
    return ras, np.ascontiguousarray(orient_outward(ras, faces))


def read_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (mm) and triangles of a surface file (.obj, .stl, .ply, .vtk, .vtp); merged vertices.

    Coordinates are taken as they are in the file; files in metres must be converted by the caller.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise UserError("mesh file not found", "give an existing .obj/.stl/.ply/.vtk/.vtp file", path)
    try:
        import trimesh

        m = trimesh.load(str(path), force="mesh", process=False)
        m.merge_vertices()
        v, f = np.asarray(m.vertices, float), np.asarray(m.faces, np.int64)
    except Exception as exc:  # trimesh raises many types on bad files
        raise UserError(f"cannot read the mesh ({exc.__class__.__name__})", "give a valid triangle mesh", path) from exc
    if len(f) < 4 or not np.all(np.isfinite(v)):
        raise UserError("mesh is empty or has non-finite vertices", "give a closed triangle mesh in mm", path)
    return v, f
