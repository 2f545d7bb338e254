"""A plan in a real slicer-core scene: folder, models and editable lines; an edited line is re-checked;
everything survives an .mrb round trip; a plan from landmarks placed on the X-rays as point lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SpineDARTLib.resources import demo_case_dir

pytest.importorskip("slicer", reason="slicer-core wheel not installed")
CASE = demo_case_dir()


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    from SpineDARTLib.pipeline import PlanRequest, run_plan

    out = tmp_path_factory.mktemp("plan")
    req = PlanRequest([CASE / "xray_a.png", CASE / "xray_b.png"], CASE / "landmarks.json", CASE / "masks.npz",
                      levels=["L2"])  # fmt: skip
    run_plan(req, out)
    return out


def test_edit_trajectory_recomputes(plan_dir, mrml_scene):
    from SpineDARTLib import mrml_plan

    added = mrml_plan.add_plan(mrml_scene, plan_dir / "report.json")
    line = added["lines"][("L2", "left")]
    rows = mrml_plan.plan_table(mrml_scene, added["folder"])
    assert [(r["level"], r["side"], r["safe"]) for r in rows] == [("L2", "left", True), ("L2", "right", True)]
    before = mrml_plan.recheck_line(mrml_scene, line)
    assert before["safe"] and before["clearance_mm"] == pytest.approx(rows[0]["clearance_mm"], abs=0.05)
    # Drag both points 4 mm towards the midline (patient right = +x for the left cannula): into the canal.
    for i in range(2):
        p = [0.0, 0.0, 0.0]
        line.GetNthControlPointPositionWorld(i, p)
        line.SetNthControlPointPositionWorld(i, p[0] + 4.0, p[1], p[2])
    after = mrml_plan.recheck_line(mrml_scene, line)
    assert not after["safe"] and after["clearance_mm"] < before["clearance_mm"] - 2.0
    assert line.GetName().endswith("UNSAFE") and line.GetDisplayNode().GetColor()[0] > 0.9
    rows = mrml_plan.plan_table(mrml_scene, added["folder"])
    table = {r["side"]: r for r in rows}
    assert not table["left"]["safe"] and table["right"]["safe"]
    # The vertebra's verdict follows its cannulas: no-go, with the planner's own suggestion.
    assert {r["verdict"] for r in rows} == {"no-go"} and added["models"]["L2"].GetName() == "L2 (no-go)"
    assert table["left"]["vertebra_suggestion"].startswith("unipedicular from the right side")
    cells = mrml_plan.table_cells(rows)
    assert len(cells[0]) == len(mrml_plan.TABLE_HEADERS) and cells[0][4] == "NO" and "unipedicular" in cells[0][7]
    for i in range(2):  # dragged back: go again
        p = [0.0, 0.0, 0.0]
        line.GetNthControlPointPositionWorld(i, p)
        line.SetNthControlPointPositionWorld(i, p[0] - 4.0, p[1], p[2])
    assert mrml_plan.recheck_line(mrml_scene, line)["safe"]
    assert {r["verdict"] for r in mrml_plan.plan_table(mrml_scene, added["folder"])} == {"go"}


def test_failed_fit_has_a_row_of_its_own(plan_dir, mrml_scene, tmp_path):
    """A vertebra whose fit failed has no cannulas, yet the table shows it, with the reason."""
    import shutil

    from SpineDARTLib import mrml_plan

    folder = shutil.copytree(plan_dir, tmp_path / "plan")
    report = json.loads((folder / "report.json").read_text())
    v = report["vertebrae"][0]
    (folder / "L2.vtp").rename(folder / "L2-FAILED.vtp")
    v.update(status="failed", fit_reason="landmark reprojection 7.2 px > 6 px", cannulas=[],
             suggestion="not planned: the fit failed", files={"mesh_failed_vtp": "L2-FAILED.vtp"})  # fmt: skip
    (folder / "report.json").write_text(json.dumps(report))
    added = mrml_plan.add_plan(mrml_scene, folder / "report.json")
    rows = mrml_plan.plan_table(mrml_scene, added["folder"])
    assert [(r["level"], r["verdict"], r["side"]) for r in rows] == [("L2", "failed", None)]
    (cells,) = mrml_plan.table_cells(rows)
    assert (
        cells[:2] == ["L2", "failed: landmark reprojection 7.2 px > 6 px"] and cells[7] == "not planned: the fit failed"
    )


def test_mrb_roundtrip(plan_dir, mrml_scene, tmp_path):
    from SpineDARTLib import mrml, mrml_plan

    added = mrml_plan.add_plan(mrml_scene, plan_dir / "report.json", name="L2 plan")
    path = mrml.save_scene_mrb(mrml_scene, tmp_path / "plan.mrb")
    scene = mrml.load_scene_mrb(path)
    try:
        lines = [scene.GetNthNodeByClass(i, "vtkMRMLMarkupsLineNode")
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode"))]  # fmt: skip
        assert sorted(n.GetName() for n in lines) == ["L2 left 11G", "L2 right 11G"]
        left = next(n for n in lines if n.GetAttribute(mrml_plan.ATTR_SIDE) == "left")
        a0, b0 = mrml_plan.line_points(added["lines"][("L2", "left")])
        a1, b1 = mrml_plan.line_points(left)
        assert np.allclose(a0, a1, atol=1e-3) and np.allclose(b0, b1, atol=1e-3)
        # The reloaded line still finds its model (and the model its landmarks and part labels).
        check = mrml_plan.recheck_line(scene, left)
        assert check["safe"] and check["clearance_pedicle_mm"] is not None
        # What the panel does with a loaded scene: every plan line found again, with its plan's folder.
        found, folder = mrml_plan.plan_lines(scene)
        assert sorted(n.GetName() for n in found) == ["L2 left 11G", "L2 right 11G"]
        rows = mrml_plan.plan_table(scene, folder)
        assert [(r["level"], r["side"], r["verdict"]) for r in rows] == [("L2", "left", "go"), ("L2", "right", "go")]
    finally:
        mrml.release_scene(scene)
    empty = mrml.new_scene()
    assert mrml_plan.plan_lines(empty) == ([], None)
    mrml.release_scene(empty)


def test_manual_landmarks_plan(plan_dir, mrml_scene, tmp_path):
    """Landmarks placed as point lists on the two X-ray slices give the same plan as the file."""
    from SpineDARTLib import mrml, mrml_plan
    from SpineDARTLib.errors import UserError
    from SpineDARTLib.fit.landmarks2d import read_landmarks_2d, write_landmarks_2d
    from SpineDARTLib.worker import WorkerClient

    a, b = mrml.load_xray_pair(mrml_scene, CASE / "xray_a.png", CASE / "xray_b.png")
    given = read_landmarks_2d(CASE / "landmarks.json")
    lists = [mrml_plan.add_landmark_points(mrml_scene, x, {"L2": given.views[i]["L2"]}, f"landmarks {'AB'[i]}")
             for i, x in enumerate((a, b))]  # fmt: skip
    placed = mrml_plan.landmarks_from_point_lists([a, b], lists)
    for i in range(2):
        for name, uv in given.views[i]["L2"].landmarks.items():
            assert np.allclose(placed.views[i]["L2"].landmarks[name], uv, atol=1e-3)
    write_landmarks_2d(placed, tmp_path / "placed.json")
    job = {"xrays": [str(CASE / "xray_a.png"), str(CASE / "xray_b.png")], "landmarks": str(tmp_path / "placed.json"),
           "levels": ["L2"], "out": str(tmp_path / "out")}  # fmt: skip
    client = WorkerClient(job, workdir=tmp_path / "job").start()
    assert client.wait(timeout_s=300) == "done", client.reason
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    reference = json.loads((plan_dir / "report.json").read_text())
    assert report["summary"] == {"L2": "go"}
    for c, r in zip(report["vertebrae"][0]["cannulas"], reference["vertebrae"][0]["cannulas"], strict=True):
        assert np.linalg.norm(np.subtract(c["entry_ras_mm"], r["entry_ras_mm"])) < 3.0  # no masks here
    # A point off the image plane, or badly named, is refused with one line.
    lists[0].SetNthControlPointLabel(0, "L2 XYZ")
    with pytest.raises(UserError, match="is not named"):
        mrml_plan.landmarks_from_point_lists([a, b], lists)


def test_point_placement_names_points_from_the_drop_down(mrml_scene):
    """Arming a placement names the next point "<level> <landmark>", makes the list the active one
    and enters place mode; a point placed twice, a bad level or landmark, no X-ray: one line each."""
    import vtk

    from SpineDARTLib import mrml, mrml_plan
    from SpineDARTLib.errors import UserError
    from SpineDARTLib.fit.landmarks2d import read_landmarks_2d

    a, b = mrml.load_xray_pair(mrml_scene, CASE / "xray_a.png", CASE / "xray_b.png")
    given = read_landmarks_2d(CASE / "landmarks.json")
    lists = [None, None]
    names = [n for n in given.views[0]["L2"].landmarks if n in given.views[1]["L2"].landmarks][:4]
    for i, xray in enumerate((a, b)):
        ijk_to_ras = mrml.volume_matrix(xray)
        for name in names:
            lists[i] = mrml_plan.arm_point_placement(mrml_scene, lists[i], xray, " l2 ", name)
            interaction = mrml_scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
            assert interaction.GetCurrentInteractionMode() == interaction.Place
            selection = mrml_scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
            assert selection.GetActivePlaceNodeID() == lists[i].GetID()
            u, v = given.views[i]["L2"].landmarks[name]
            lists[i].AddControlPoint(vtk.vtkVector3d(*(ijk_to_ras @ [u, v, 0.0, 1.0])[:3]))  # the user's click
        assert lists[i].GetNthControlPointLabel(3) == f"L2 {names[3]}"
        assert lists[i].GetName() == f"{xray.GetName()} landmarks"
    placed = mrml_plan.landmarks_from_point_lists([a, b], lists)
    assert list(placed.views[1]["L2"].landmarks) == names
    assert np.allclose(placed.views[1]["L2"].landmarks[names[1]], given.views[1]["L2"].landmarks[names[1]], atol=1e-3)
    mrml_plan.arm_point_placement(mrml_scene, lists[0], a, "L2", names[1])
    lists[0].AddControlPoint(vtk.vtkVector3d(*(mrml.volume_matrix(a) @ [10.0, 10.0, 0.0, 1.0])[:3]))
    with pytest.raises(UserError, match=f"'L2 {names[1]}' is placed twice on X-ray A"):
        mrml_plan.landmarks_from_point_lists([a, b], lists)
    for level, landmark, xray, match in (("L2", "XYZ", a, "unknown landmark"), ("Q9", "BC", a, "Q9"),
                                         ("", "BC", a, "no level"), ("L2", "BC", None, "no X-ray")):  # fmt: skip
        with pytest.raises(UserError, match=match):
            mrml_plan.arm_point_placement(mrml_scene, lists[0], xray, level, landmark)


def test_plan_drawn_on_the_xrays(plan_dir, mrml_scene):
    """Outlines and cannulas lie on each X-ray's image plane, the outline around the vertebra."""
    from SpineDARTLib import mrml, mrml_plan

    a, b = mrml.load_xray_pair(mrml_scene, CASE / "xray_a.png", CASE / "xray_b.png")
    added = mrml_plan.add_plan(mrml_scene, plan_dir / "report.json")
    nodes = mrml_plan.draw_on_xrays(mrml_scene, [a, b], added)
    assert sorted(n.GetName() for n in nodes) == sorted(
        ["L2 outline A", "L2 outline B", "L2 left on A", "L2 right on A", "L2 left on B", "L2 right on B"]
    )
    report = json.loads((plan_dir / "report.json").read_text())
    bc = np.asarray(report["vertebrae"][0]["landmarks_ras_mm"]["BC"])
    for xn, tag in ((a, "A"), (b, "B")):
        ras_to_ijk = mrml.volume_matrix(xn, ras_to_ijk=True)
        curve = next(n for n in nodes if n.GetName() == f"L2 outline {tag}")
        pts = np.array([curve.GetNthControlPointPositionWorld(i) for i in range(curve.GetNumberOfControlPoints())])
        ijk = np.c_[pts, np.ones(len(pts))] @ ras_to_ijk.T
        assert len(pts) > 20 and np.abs(ijk[:, 2]).max() < 1e-3  # on the image plane
        centre = mrml.projection_from_node(xn).project(bc[None])[0]
        assert ijk[:, 0].min() < centre[0] < ijk[:, 0].max() and ijk[:, 1].min() < centre[1] < ijk[:, 1].max()
