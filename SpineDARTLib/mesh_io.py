"""Mesh files as 3D Slicer reads them: LPS coordinates on disk with Slicer's ``SPACE=LPS`` marker.

In memory everything is RAS; the conversion (negate x and y) happens here and only here. The
marker is the one Slicer itself writes: the header line of legacy VTK and STL files, a ``SPACE``
field-data string in VTP, a comment in PLY. Per-vertex part labels travel as point data ("part").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import UserError

FORMATS = (".vtp", ".vtk", ".stl", ".ply")
_LPS = np.array([-1.0, -1.0, 1.0])


def _labelled_lps_polydata(vertices_lps: np.ndarray, faces: np.ndarray, labels: np.ndarray | None):
    import vtk
    from vtk.util import numpy_support

    from .meshing import polydata

    poly = polydata(vertices_lps, faces)
    if labels is not None:
        arr = numpy_support.numpy_to_vtk(np.asarray(labels, dtype=np.int32), deep=True)
        arr.SetName("part")
        poly.GetPointData().AddArray(arr)
    space = vtk.vtkStringArray()
    space.SetName("SPACE")
    space.InsertNextValue("LPS")
    poly.GetFieldData().AddArray(space)
    return poly


def write_mesh(path: str | Path, vertices_ras: np.ndarray, faces: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Write a triangle mesh (RAS mm in memory) as LPS on disk, atomically."""
    import vtk

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise UserError(f"cannot write mesh format {ext or '(none)'}", f"use one of {', '.join(FORMATS)}", path)
    poly = _labelled_lps_polydata(np.asarray(vertices_ras, float) * _LPS, faces, labels)
    writer = {
        ".vtp": vtk.vtkXMLPolyDataWriter,
        ".vtk": vtk.vtkPolyDataWriter,
        ".stl": vtk.vtkSTLWriter,
        ".ply": vtk.vtkPLYWriter,
    }[ext]()
    if ext in (".vtk", ".stl"):
        writer.SetHeader("3D Slicer output. SPACE=LPS")  # the header Slicer writes and reads
        writer.SetFileTypeToBinary()
    elif ext == ".ply":
        writer.AddComment("SPACE=LPS")
        writer.SetFileTypeToBinary()
    with atomic_path(path) as tmp:
        writer.SetFileName(str(tmp))
        writer.SetInputData(poly)
        if not writer.Write():
            raise UserError("could not write the mesh", "check the folder is writable", path)
    return path


def _header_space(path: Path) -> str | None:
    head = path.read_bytes()[:4096]
    for space in ("LPS", "RAS"):
        if f"SPACE={space}".encode() in head:
            return space
    return None


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (RAS mm when the file carries Slicer's LPS marker; otherwise as stored) and triangles."""
    path = Path(path)
    if not path.is_file():
        raise UserError("mesh file not found", "give an existing .obj/.stl/.ply/.vtk/.vtp file", path)
    try:
        import trimesh

        if path.suffix.lower() in (".vtp", ".vtk"):
            import vtk
            from vtk.util import numpy_support

            reader = vtk.vtkXMLPolyDataReader() if path.suffix.lower() == ".vtp" else vtk.vtkPolyDataReader()
            reader.SetFileName(str(path))
            reader.Update()
            fd = reader.GetOutput().GetFieldData().GetAbstractArray("SPACE")
            space = fd.GetValue(0) if fd is not None and fd.GetNumberOfValues() else _header_space(path)
            tri = vtk.vtkTriangleFilter()
            tri.SetInputData(reader.GetOutput())
            tri.Update()
            poly = tri.GetOutput()
            v = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(float)
            f = numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3).astype(np.int64)
        else:
            m = trimesh.load(str(path), force="mesh", process=False)
            m.merge_vertices(merge_tex=True, merge_norm=True)
            v, f = np.asarray(m.vertices, float), np.asarray(m.faces, np.int64)
            space = _header_space(path)
    except UserError:
        raise
    except Exception as exc:  # readers raise many types on bad files
        raise UserError(f"cannot read the mesh ({exc.__class__.__name__})", "give a valid triangle mesh", path) from exc
    if len(f) < 4 or not np.all(np.isfinite(v)):
        raise UserError("mesh is empty or has non-finite vertices", "give a closed triangle mesh in mm", path)
    if space == "LPS":
        v = v * _LPS
    return v, f


def read_part_labels(path: str | Path) -> np.ndarray | None:
    """The per-vertex ``part`` labels of a ``.vtp`` written by :func:`write_mesh`, or None."""
    import vtk
    from vtk.util import numpy_support

    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    arr = reader.GetOutput().GetPointData().GetArray("part")
    return None if arr is None else numpy_support.vtk_to_numpy(arr).astype(np.int64)
