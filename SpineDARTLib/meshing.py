"""Meshes ↔ voxels: label masks to surfaces (marching cubes) and closed meshes to partial-volume
occupancy grids."""

from __future__ import annotations

import numpy as np

from .errors import UserError


def grid_spec(lo: np.ndarray, hi: np.ndarray, spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and IJK→RAS matrix of the regular grid from ``lo`` covering ``hi`` (axis-aligned,
    isotropic ``spacing``), without materialising its points."""
    lo = np.asarray(lo, float)
    shape = tuple(int(n) for n in np.ceil((np.asarray(hi, float) - lo) / spacing).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3) * spacing
    affine[:3, 3] = lo
    return shape, affine


def grid_points(lo: np.ndarray, hi: np.ndarray, spacing: float) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """Points (N, 3) of a regular grid from ``lo`` covering ``hi``, row-major (i, j, k), its shape
    and its IJK→RAS matrix (axis-aligned, isotropic ``spacing``)."""
    shape, affine = grid_spec(lo, hi, spacing)
    axes = [affine[i, 3] + spacing * np.arange(shape[i]) for i in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return pts, shape, affine


def crop_to_mask(mask: np.ndarray, affine: np.ndarray, margin_voxels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A binary mask cropped to its bounding box (+ margin) and the crop's IJK→RAS matrix."""
    from .labelmaps import mask_bounds

    first, last = mask_bounds(mask)
    lo = np.maximum(first - margin_voxels, 0)
    hi = np.minimum(last + margin_voxels + 1, mask.shape)
    A = np.asarray(affine, float).copy()
    A[:3, 3] = A[:3, :3] @ lo + A[:3, 3]
    return mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], A


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh (mm³), positive when the triangles face outwards."""
    v = np.asarray(vertices, float)
    f = np.asarray(faces, np.int64)
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def orient_outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Faces of a closed mesh, reversed if needed so that its normals point outwards."""
    f = np.asarray(faces, np.int64)
    return f[:, ::-1].copy() if signed_volume(vertices, f) < 0 else f


class SignedDistance:
    """Signed distance (mm, negative inside) to a closed triangle mesh (VTK), built once and
    queried many times. VTK takes the sign from the triangles' orientation, so the mesh is first
    oriented outwards."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        import vtk

        self._poly = polydata(vertices, orient_outward(vertices, faces))
        self._f = vtk.vtkImplicitPolyDataDistance()
        self._f.SetInput(self._poly)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        import vtk
        from vtk.util import numpy_support

        pts = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 3))
        out = vtk.vtkDoubleArray()
        self._f.FunctionValue(numpy_support.numpy_to_vtk(pts, deep=True), out)
        return numpy_support.vtk_to_numpy(out).copy().reshape(np.shape(points)[:-1])


def signed_distance(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance (mm, negative inside) of points to a closed triangle mesh (VTK)."""
    return SignedDistance(vertices, faces)(points)


def polydata(vertices: np.ndarray, faces: np.ndarray):
    """A vtkPolyData of triangles (coordinates as given)."""
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


def _stencil(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, spacing: float, shape) -> np.ndarray:
    """Binary inside/outside of grid points (i, j, k) → origin + spacing·(i, j, k), by VTK's
    scan-line stencil of the closed surface (fast, exact for points off the surface)."""
    import vtk
    from vtk.util import numpy_support

    stencil = vtk.vtkPolyDataToImageStencil()
    stencil.SetInputData(polydata(vertices, orient_outward(vertices, faces)))
    stencil.SetOutputOrigin(*map(float, origin))
    stencil.SetOutputSpacing(spacing, spacing, spacing)
    stencil.SetOutputWholeExtent(0, shape[0] - 1, 0, shape[1] - 1, 0, shape[2] - 1)
    img = vtk.vtkImageData()
    img.SetDimensions(*map(int, shape))
    img.SetOrigin(*map(float, origin))
    img.SetSpacing(spacing, spacing, spacing)
    img.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    img.GetPointData().GetScalars().Fill(1)
    apply = vtk.vtkImageStencil()
    apply.SetInputData(img)
    apply.SetStencilConnection(stencil.GetOutputPort())
    apply.ReverseStencilOff()
    apply.SetBackgroundValue(0)
    apply.Update()
    arr = numpy_support.vtk_to_numpy(apply.GetOutput().GetPointData().GetScalars())
    return arr.reshape(tuple(int(n) for n in shape[::-1])).transpose(2, 1, 0) > 0


def inside_grid(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, spacing: float, shape) -> np.ndarray:
    """Binary occupancy (bool, ``shape``) of a closed mesh on the grid origin + spacing·(i, j, k)."""
    return _stencil(np.asarray(vertices, float), np.asarray(faces, np.int64), np.asarray(origin, float), spacing, shape)


def voxelize_mesh(
    vertices: np.ndarray, faces: np.ndarray, spacing_mm: float = 1.0, supersample: int = 3, margin_mm: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy in [0, 1] of each voxel (fraction of its ``supersample``³ sub-points inside the
    mesh) and the grid's IJK→RAS matrix (voxel centres, NIfTI convention). The grid covers the
    mesh's bounding box plus ``margin_mm``."""
    v = np.asarray(vertices, float)
    f = np.asarray(faces, np.int64)
    if len(v) < 4 or len(f) < 4:
        raise UserError("mesh is empty or too small to enclose a volume", "give a closed triangle mesh")
    if not (spacing_mm > 0 and supersample >= 1):
        raise UserError("voxel spacing and supersampling must be positive", "give e.g. spacing 1.0 mm, supersample 3")
    k = int(supersample)
    lo = v.min(0) - margin_mm
    shape = np.ceil((v.max(0) + margin_mm - lo) / spacing_mm).astype(int) + 1
    fine = spacing_mm / k
    # Sub-point (a, b, c) of voxel i sits at lo + spacing·i + fine·(a − (k − 1)/2).
    sub = _stencil(v, f, lo - fine * (k - 1) / 2, fine, shape * k)
    occ = sub.reshape(shape[0], k, shape[1], k, shape[2], k).mean(axis=(1, 3, 5))
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3) * spacing_mm
    affine[:3, 3] = lo
    return occ, affine


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
