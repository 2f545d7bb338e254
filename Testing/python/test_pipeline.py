"""``spinedart plan`` end to end on the bundled demo case: report, meshes and markups that Slicer's
own storage nodes load (slicer-core), overlays, unsafe plans never exported as good, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SpineDARTLib.resources import demo_case_dir
from SpineDARTLib.schemas import PLAN_REPORT_V1, load_json

CASE = demo_case_dir()
CUDA = torch.cuda.is_available()
XRAYS = ["--xray", CASE / "xray_a.png", "--xray", CASE / "xray_b.png"]
EVIDENCE = ["--landmarks", CASE / "landmarks.json", "--masks", CASE / "masks.npz"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    import contextlib
    import io

    from SpineDARTLib.cli import main

    out = tmp_path_factory.mktemp("plan")
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main(["plan", *(str(a) for a in [*XRAYS, *EVIDENCE, "--levels", "L2", "--out", out, "--json"])])
    return rc, buf.getvalue(), err.getvalue(), out


def test_plan_writes_a_valid_report_and_matches_the_truth(planned):
    from SpineDARTLib.metrics import trajectory_errors

    rc, out, err, folder = planned
    assert rc == 0, err
    report = load_json(folder / "report.json", PLAN_REPORT_V1)
    assert report == json.loads(out.strip().splitlines()[-1])
    assert report["summary"] == {"L2": "go"} and report["ok"]
    (v,) = report["vertebrae"]
    assert v["fit"]["converged"] and v["gauge"] == 11 and v["init"]["path"] == "landmarks"
    assert "L2" in out and "go" in out.splitlines()[1]  # the table
    assert "100%" in err  # the progress bar
    truth = json.loads((CASE / "truth.json").read_text())["vertebrae"]["L2"]["trajectories"]
    for c in v["cannulas"]:
        assert c["safe"] and c["predicted"]["grade"] == "A" and c["fluoro_rule"]["ok"]
        e = trajectory_errors({c["side"]: {"entry": c["entry_ras_mm"], "target": c["target_ras_mm"]}},
                              {c["side"]: truth[c["side"]]})  # fmt: skip
        assert e["entry_err_mm"] < 4.0 and e["target_err_mm"] < 4.0 and e["angle_err_deg"] < 5.0, e
    assert report["device"] == ("cuda" if CUDA else "cpu")  # --device auto
    prov = report["provenance"]
    assert len(prov["inputs"]) == 6 and all(len(i["sha256"]) == 64 for i in prov["inputs"])
    assert prov["models"]["ssm L1-L5"] and set(report["timings"]) >= {"fit_s", "plan_s", "total_s"}
    for name in ("overlay_a.png", "overlay_b.png", "L2.stl"):
        assert (folder / name).stat().st_size > 5000


def test_slicer_loads_the_mesh_and_markups_and_the_path_lies_in_the_bone(planned, mrml_scene):
    """Through slicer-core's own storage nodes (LPS on disk → RAS in the scene): entry and target
    lie in or on the mesh, and the left cannula is on the patient's left (smaller RAS x)."""
    import slicer
    from vtk.util import numpy_support

    from SpineDARTLib.meshing import signed_distance

    folder = planned[3]
    model = mrml_scene.AddNewNodeByClass("vtkMRMLModelNode", "L2")
    store = mrml_scene.AddNewNodeByClass("vtkMRMLModelStorageNode")
    store.SetFileName(str(folder / "L2.vtp"))
    assert store.ReadData(model)
    poly = model.GetPolyData()
    verts = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(float)
    cells = numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    report = json.loads((folder / "report.json").read_text())
    ends = {}
    for side in ("left", "right"):
        line = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
        js = slicer.vtkMRMLMarkupsJsonStorageNode()
        mrml_scene.AddNode(js)
        js.SetFileName(str(folder / f"L2-{side}.mrk.json"))
        assert js.ReadData(line)
        assert line.GetNumberOfControlPoints() == 2 and line.GetName().startswith(f"L2 {side} 11G")
        pts = []
        for i in range(2):
            p = [0.0, 0.0, 0.0]
            line.GetNthControlPointPosition(i, p)
            pts.append(p)
        pts = np.array(pts)
        c = next(c for c in report["vertebrae"][0]["cannulas"] if c["side"] == side)
        assert np.allclose(pts, [c["entry_ras_mm"], c["target_ras_mm"]], atol=1e-3)
        assert (signed_distance(verts, cells, pts) < 0.5).all()
        ends[side] = pts
    assert ends["left"][0][0] < ends["right"][0][0]


def test_unsafe_plans_are_marked_not_exported_as_good(tmp_path, run_cli):
    rc, out, err = run_cli("plan", *XRAYS, *EVIDENCE, "--levels", "L2", "--margin", "4.5", "--out", tmp_path)
    assert rc == 1, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert not report["ok"] and report["summary"] == {"L2": "no-go"}
    assert report["vertebrae"][0]["suggestion"]
    for side in ("left", "right"):
        m = json.loads((tmp_path / f"L2-{side}.mrk.json").read_text())["markups"][0]
        assert m["name"].endswith("UNSAFE") and m["description"].startswith("UNSAFE: clearance")
        assert m["display"]["color"][0] > 0.9  # red
    assert "no-go" in out


def _bad_landmarks(tmp_path):
    doc = json.loads((CASE / "landmarks.json").read_text())
    doc["views"] = doc["views"][:1]
    p = tmp_path / "one-view.json"
    p.write_text(json.dumps(doc))
    return p


def _nan_landmarks(tmp_path):
    doc = json.loads((CASE / "landmarks.json").read_text())
    lm = doc["views"][1]["vertebrae"][0]["landmarks"]
    lm[next(iter(lm))]["uv"][0] = 12345.678
    p = tmp_path / "inf.json"
    p.write_text(json.dumps(doc).replace("12345.678", "1e999"))  # valid JSON that reads as infinity
    return p


def _bad_masks(tmp_path):
    p = tmp_path / "masks.npz"
    np.savez(p, view0_L2=np.zeros((10, 10), np.uint8))
    return p


@pytest.mark.parametrize(
    "args, match",
    [
        (lambda t: ["--xray", CASE / "xray_a.png", *EVIDENCE], "1 X-ray(s) given"),
        (lambda t: [*XRAYS, "--detector", CASE / "missing.safetensors"], "file not found"),
        (lambda t: [*XRAYS, "--landmarks", _bad_landmarks(t)], "describes 1 views but 2 X-rays"),
        (lambda t: [*XRAYS, *EVIDENCE[:2], "--masks", _bad_masks(t)], "view0_L2 is (10, 10) px"),
        (lambda t: [*XRAYS, "--landmarks", _nan_landmarks(t)], "uv is not finite"),
        (lambda t: [*XRAYS, *EVIDENCE, "--levels", "T4"], "T4 not marked in both views"),
        (lambda t: [*XRAYS, *EVIDENCE, "--gauge", "12"], "--gauge 12"),
        (lambda t: ["--xray", CASE / "xray_a.png", "--xray", CASE / "xray_a.png", *EVIDENCE], "deg apart"),
        (lambda t: [*XRAYS, "--landmarks", CASE / "missing.json"], "file not found"),
        (lambda t: [*XRAYS, *EVIDENCE, "--device", "tpu"], "device 'tpu' is unknown"),
        pytest.param(
            lambda t: [*XRAYS, *EVIDENCE, "--device", "gpu"],
            "no CUDA GPU",
            marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA"),
        ),  # fmt: skip
    ],
)
def test_plan_bad_input_gets_one_line(tmp_path, run_cli, args, match):
    rc, out, err = run_cli("plan", *args(tmp_path), "--out", tmp_path / "o")
    assert rc == 2, err
    assert match in err and len(err.strip().splitlines()) == 1, err


def test_markups_round_trip_and_laterality(tmp_path):
    from SpineDARTLib.markups import read_line, write_line

    p = write_line(tmp_path / "x.mrk.json", np.array([-20.0, -30.0, 5.0]), np.array([-8.0, 10.0, 2.0]), "L3 left")
    doc = json.loads(p.read_text())["markups"][0]
    assert doc["coordinateSystem"] == "LPS" and doc["controlPoints"][0]["position"] == [20.0, 30.0, 5.0]
    a, b, name = read_line(p)
    assert np.allclose(a, [-20, -30, 5]) and np.allclose(b, [-8, 10, 2]) and name == "L3 left"


def test_snapshot_draws_the_vertebra_and_its_cannulas(planned, tmp_path):
    """The plan drawn by Slicer's displayable managers on a slicer-core scene (offscreen, EGL): bone and
    green (safe) cannulas in 3-D; on the X-ray pane the fitted outline (cyan) around where the
    vertebra's centre projects, so plane, texture and camera agree with the X-ray's geometry."""
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    from PIL import Image

    from SpineDARTLib.snapshot import OUTLINE_RGB, write_snapshot
    from SpineDARTLib.xray import read_xray

    size = 300
    img = np.asarray(Image.open(write_snapshot(planned[3] / "report.json", tmp_path / "s.png", size=size)))
    assert img.shape == (size, 2 * size, 3)
    left, right = img[:, :size].astype(int), img[:, size:].astype(int)
    green = (left[:, :, 1] > left[:, :, 0] + 40) & (left[:, :, 1] > left[:, :, 2] + 40)
    bone = (left.min(axis=2) > 90) & (np.ptp(left, axis=2) < 60)
    assert green.sum() > 100 and bone.sum() > 2000
    cyan = np.abs(right - 255 * np.asarray(OUTLINE_RGB)).max(axis=2) < 60
    assert cyan.sum() > 150
    report = json.loads((planned[3] / "report.json").read_text())
    xray = read_xray(CASE / "xray_a.png")
    bc = xray.projection.project(np.asarray([report["vertebrae"][0]["landmarks_ras_mm"]["BC"]]))[0]
    u, v = bc * size / np.asarray(xray.projection.image_size)
    rows, cols = np.nonzero(cyan)
    assert cols.min() < u < cols.max() and rows.min() < v < rows.max()
    assert cols.max() - cols.min() < size / 2  # one vertebra's outline, not the whole picture
    grey = np.ptp(right, axis=2) < 12
    assert grey.mean() > 0.8  # the X-ray fills the pane, drawn where it is (not shifted or flipped):
    shown = right[:, :, 0][grey].astype(float)
    expected = np.asarray(Image.fromarray(xray.image.astype(np.float32)).resize((size, size)))[grey]
    assert np.corrcoef(shown, expected)[0, 1] > 0.95  # 0.98 here; shifted by 4 % of the pane: 0.87


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine): the GPU fit is compared with the CPU's")
def test_plan_on_the_gpu_matches_the_cpu(planned, tmp_path, run_cli):
    rc, out, err = run_cli("plan", *XRAYS, *EVIDENCE, "--levels", "L2", "--device", "gpu", "--out", tmp_path, "--json")
    assert rc == 0, err
    gpu = json.loads(out.strip().splitlines()[-1])
    cpu = load_json(planned[3] / "report.json", PLAN_REPORT_V1)
    assert gpu["device"] == "cuda" and gpu["summary"] == cpu["summary"]
    for a, b in zip(gpu["vertebrae"][0]["cannulas"], cpu["vertebrae"][0]["cannulas"], strict=True):
        assert np.linalg.norm(np.subtract(a["entry_ras_mm"], b["entry_ras_mm"])) < 0.5
        assert np.linalg.norm(np.subtract(a["target_ras_mm"], b["target_ras_mm"])) < 0.5


def test_plan_without_landmarks_or_detector_weights_says_so(tmp_path):
    """No landmarks and no detector weights where they should be: one message naming the file."""
    from SpineDARTLib.errors import UserError
    from SpineDARTLib.pipeline import PlanRequest, run_plan

    req = PlanRequest([CASE / "xray_a.png", CASE / "xray_b.png"], None, detector=tmp_path / "none.safetensors")
    with pytest.raises(UserError, match="detector weights not found") as exc:
        run_plan(req, tmp_path / "out")
    assert "none.safetensors" in str(exc.value) and "--landmarks FILE" in str(exc.value)
