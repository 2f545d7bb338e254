"""Real MRML (slicer-core wheel): X-ray volumes, models and markups survive an .mrb round trip."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core wheel not installed")

from SpineDARTLib import mrml  # noqa: E402
from SpineDARTLib.geometry import from_carm  # noqa: E402
from SpineDARTLib.xray import XRay  # noqa: E402


def _xray() -> XRay:
    proj = from_carm(20.0, 5.0, 600.0, 1000.0, (48, 32), pixel_spacing_mm=(1.0, 1.0), isocenter_mm=(3.0, -4.0, 10.0))
    img = np.zeros((32, 48), np.float32)
    img[5, 40] = 7.0  # asymmetric: a transposition or flip moves it
    img[:, :3] = 1.0
    return XRay(img, proj, "calibrated", {"path": "synthetic", "intensity": {"conversion": "identity"}})


def _vertices() -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[0, 0, 0], [30, 0, 0], [0, 20, 0], [0, 0, 10]], float) + [5, -7, 40]
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v, f


def test_nodes_survive_mrb_round_trip(mrml_scene, tmp_path):
    xr = _xray()
    vol = mrml.add_xray_volume(mrml_scene, xr, "View A")
    v, f = _vertices()
    mrml.add_model_node(mrml_scene, v, f, "L1")
    mrml.add_line_node(mrml_scene, [10.0, -20.0, 30.0], [-5.0, 15.0, 32.0], "L1 left cannula")
    # The volume sits on the detector: pixel (40, 5) maps to a world point that P projects back to it.
    import vtk

    m = vtk.vtkMatrix4x4()
    vol.GetIJKToRASMatrix(m)
    ras = np.array(m.MultiplyPoint((40, 5, 0, 1))[:3])
    assert np.allclose(xr.projection.project(ras)[0], [40, 5], atol=1e-6)

    path = mrml.save_scene_mrb(mrml_scene, tmp_path / "plan.mrb")
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith(".mrk.json") for n in names) and any(n.endswith(".nrrd") for n in names)

    back = mrml.load_scene_mrb(path)
    try:
        line = back.GetFirstNodeByName("L1 left cannula")
        assert line is not None and line.GetNumberOfControlPoints() == 2
        p0, p1 = [0.0] * 3, [0.0] * 3
        line.GetNthControlPointPosition(0, p0)
        line.GetNthControlPointPosition(1, p1)
        assert np.allclose(p0, [10, -20, 30]) and np.allclose(p1, [-5, 15, 32])

        model = back.GetFirstNodeByName("L1")
        from vtk.util import numpy_support

        pts = numpy_support.vtk_to_numpy(model.GetPolyData().GetPoints().GetData())
        assert np.allclose(pts, v, atol=1e-4) and model.GetPolyData().GetNumberOfPolys() == 4

        vol2 = back.GetFirstNodeByName("View A")
        xr2 = mrml.xray_from_node(vol2)
        assert np.array_equal(xr2.image, xr.image)
        assert np.allclose(xr2.projection.P, xr.projection.P)
        assert np.allclose(xr2.projection.isocenter_mm, xr.projection.isocenter_mm)
        assert vol2.GetAttribute(mrml.ATTR_GEOMETRY_KIND) == "calibrated"
        m2 = vtk.vtkMatrix4x4()
        vol2.GetIJKToRASMatrix(m2)
        assert np.allclose(
            [m2.GetElement(i, j) for i in range(4) for j in range(4)],
            [m.GetElement(i, j) for i in range(4) for j in range(4)],
            atol=1e-6,
        )
    finally:
        mrml.release_scene(back)


def test_markups_are_lps_on_disk(mrml_scene, tmp_path):
    """Slicer's markups files are LPS: an asymmetric point must come out with x and y negated."""
    mrml.add_line_node(mrml_scene, [11.0, 22.0, 33.0], [1.0, 2.0, 3.0], "traj")
    path = mrml.save_scene_mrb(mrml_scene, tmp_path / "s.mrb")
    z = zipfile.ZipFile(path)
    doc = json.loads(z.read(next(n for n in z.namelist() if n.endswith(".mrk.json"))))
    mk = doc["markups"][0]
    assert mk["coordinateSystem"] == "LPS"
    assert np.allclose(mk["controlPoints"][0]["position"], [-11, -22, 33])


def test_scene_without_markups_logic_is_refused(tmp_path):
    """Without the markups logic a line is silently left out of the bundle: the guard must refuse."""
    import slicer
    import vtk

    plain = slicer.vtkMRMLScene()
    n = plain.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "L")
    n.AddControlPoint(vtk.vtkVector3d(1, 2, 3))
    n.AddControlPoint(vtk.vtkVector3d(4, 5, 6))
    # The failure mode the guard exists for: MRML writes the bundle without the markups file.
    plain.WriteToMRB(str(tmp_path / "plain.mrb"))
    assert not any(x.endswith(".mrk.json") for x in zipfile.ZipFile(tmp_path / "plain.mrb").namelist())
    with pytest.raises(RuntimeError, match="markups"):
        mrml.save_scene_mrb(plain, tmp_path / "guarded.mrb")
    assert not (tmp_path / "guarded.mrb").exists()


def test_node_without_geometry_is_a_user_error(mrml_scene):
    from SpineDARTLib.errors import UserError

    node = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain")
    with pytest.raises(UserError, match="no X-ray geometry"):
        mrml.projection_from_node(node)


def test_load_xray_node_from_demo_case(mrml_scene):
    from SpineDARTLib.geometry import view_pair_check
    from SpineDARTLib.resources import demo_case_dir

    a = mrml.load_xray_node(mrml_scene, demo_case_dir() / "xray_a.png")
    b = mrml.load_xray_node(mrml_scene, demo_case_dir() / "xray_b.png")
    angle, warn = view_pair_check(mrml.projection_from_node(a), mrml.projection_from_node(b))
    assert 60 < angle <= 90.01 and warn is None
    assert a.GetAttribute(mrml.ATTR_GEOMETRY_KIND) == "calibrated"


def test_load_xray_pair_is_all_or_nothing_and_described(mrml_scene, tmp_path):
    from SpineDARTLib.errors import UserError
    from SpineDARTLib.resources import demo_case_dir

    case = demo_case_dir()
    before = mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(UserError, match="nope.png"):
        mrml.load_xray_pair(mrml_scene, case / "xray_a.png", tmp_path / "nope.png")
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before  # A was removed again
    with pytest.raises(UserError, match="X-ray B"):
        mrml.load_xray_pair(mrml_scene, case / "xray_a.png", None)
    a, b = mrml.load_xray_pair(mrml_scene, case / "xray_a.png", case / "xray_b.png")
    text, level = mrml.describe_view_pair(a, b)
    assert level == "ok" and "calibrated geometry" in text and "Angle between the views: 90.0°" in text
    # The same view twice: an error the panel shows, not an exception.
    a2, _ = mrml.load_xray_pair(mrml_scene, case / "xray_a.png", case / "xray_a.png")
    text, level = mrml.describe_view_pair(a, a2)
    assert level == "error" and "0.0 deg apart" in text
    text, level = mrml.describe_view_pair(a, None)
    assert "X-ray B: not loaded" in text
