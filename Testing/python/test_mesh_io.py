"""Meshes on disk are LPS with Slicer's marker: Slicer's own reader must put them back in RAS."""

from __future__ import annotations

import numpy as np
import pytest

from SpineDARTLib.mesh_io import read_mesh, write_mesh

# An asymmetric tetrahedron well off the origin: any left/right or front/back swap moves it.
V = np.array([[30.0, 20.0, 10.0], [45.0, 20.0, 10.0], [30.0, 28.0, 10.0], [30.0, 20.0, 14.0]])
F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


@pytest.mark.parametrize("ext", [".vtp", ".vtk", ".stl", ".ply"])
def test_slicer_reads_our_meshes_in_ras(tmp_path, mrml_scene, ext):
    import slicer
    from vtk.util import numpy_support

    path = write_mesh(tmp_path / f"v{ext}", V, F, labels=np.array([0, 1, 2, 3]))
    node = mrml_scene.AddNewNodeByClass("vtkMRMLModelNode", "m")
    storage = slicer.vtkMRMLModelStorageNode()
    mrml_scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    pts = numpy_support.vtk_to_numpy(node.GetPolyData().GetPoints().GetData())
    # STL stores each triangle's corners: compare as sets of points.
    got = {tuple(np.round(p, 3)) for p in pts}
    assert got == {tuple(p) for p in V}
    # And our own reader agrees.
    v2, f2 = read_mesh(path)
    assert {tuple(np.round(p, 3)) for p in v2} == {tuple(p) for p in V} and len(f2) == 4


def test_on_disk_coordinates_are_lps(tmp_path):
    import vtk
    from vtk.util import numpy_support

    path = write_mesh(tmp_path / "v.vtk", V, F)
    r = vtk.vtkPolyDataReader()
    r.SetFileName(str(path))
    r.Update()
    raw = numpy_support.vtk_to_numpy(r.GetOutput().GetPoints().GetData())
    assert np.allclose(raw, V * [-1, -1, 1])
    assert b"SPACE=LPS" in path.read_bytes()[:200]


def test_bad_mesh_paths(tmp_path):
    from SpineDARTLib.errors import UserError

    with pytest.raises(UserError, match="format"):
        write_mesh(tmp_path / "v.xyz", V, F)
    with pytest.raises(UserError, match="not found"):
        read_mesh(tmp_path / "none.vtp")
    (tmp_path / "bad.stl").write_bytes(b"garbage")
    with pytest.raises(UserError, match="mesh"):
        read_mesh(tmp_path / "bad.stl")
