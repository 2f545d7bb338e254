"""The resources locator (source tree and wheel) and the demo on the bundled case."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from SpineDARTLib import resources
from SpineDARTLib.demo import build_demo_case

REPO = Path(__file__).resolve().parents[2]


def test_locator_finds_source_tree_resources():
    assert resources.resources_dir() == REPO / "Resources"
    case = resources.demo_case_dir()
    for name in ("xray_a.png", "xray_a.json", "xray_b.png", "xray_b.json", "landmarks.json", "masks.npz", "truth.json"):
        assert (case / name).is_file()


def test_missing_resource_is_a_user_error():
    from SpineDARTLib.errors import UserError

    with pytest.raises(UserError, match="reinstall"):
        resources.resource_path("no-such-model.npz")


def test_wheel_ships_resources_and_console_script(tmp_path):
    """Build the wheel, install it into a bare folder and locate the demo case from there."""
    wheel_dir = tmp_path / "wheel"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (whl,) = wheel_dir.glob("spinedart-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    assert "SpineDARTLib/_resources/demo/xray_a.png" in names
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "spinedart = SpineDARTLib.cli:entry" in zipfile.ZipFile(whl).read(ep).decode()
    target = tmp_path / "site"
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(whl)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert inst.returncode == 0, inst.stderr[-2000:]
    probe = subprocess.run(
        [sys.executable, "-c", "import SpineDARTLib.resources as r; print(r.demo_case_dir())"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert probe.returncode == 0, probe.stderr
    found = Path(probe.stdout.strip())
    assert found == target / "SpineDARTLib" / "_resources" / "demo"
    assert (found / "landmarks.json").is_file()


def test_demo_plans_the_bundled_case_and_the_real_ct(tmp_path, run_cli):
    """The README's main command, whole: the synthetic case is planned safely and close to the truth;
    the real CT's views are rendered, planned, and whatever fails is reported as failed."""
    rc, out, err = run_cli("demo", "--out", tmp_path / "out", "--json")
    assert rc == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "out" / "demo-report.json").read_text())
    synthetic, real = report["cases"]
    assert synthetic["summary"] == {"L1": "go", "L2": "go", "L3": "go"} and synthetic["ok"]
    errs = synthetic["trajectory_errors"]
    assert len(errs) == 6 and max(e["entry_err_mm"] for e in errs) < 4.0 and max(e["angle_err_deg"] for e in errs) < 5
    assert set(real["summary"]) == {"T11", "T12", "L1"}
    real_report = json.loads((tmp_path / "out" / real["report"]).read_text())
    for v in real_report["vertebrae"]:  # a failed fit has no cannulas and no markups
        assert (v["status"] == "failed") == (not v["fit"]["converged"]) == (not v["cannulas"])
        assert (tmp_path / "out" / "real-ct" / f"{v['level']}-left.mrk.json").exists() == bool(v["cannulas"])
    assert report["ok"] == (synthetic["ok"] and real["ok"])
    for case in ("synthetic", "real-ct"):
        assert (tmp_path / "out" / case / "overlay_a.png").stat().st_size > 10000
    assert synthetic["snapshot"] == "synthetic/snapshot.png"  # drawn by slicer-core displayable managers (EGL)
    assert (tmp_path / "out" / synthetic["snapshot"]).stat().st_size > 50000
    assert "level" in out and "outputs:" in out


def test_bundled_case_is_reproducible_from_its_seed(tmp_path):
    case = build_demo_case(tmp_path / "case")
    bundled = resources.demo_case_dir()
    for name in ("landmarks.json", "truth.json", "xray_a.json", "xray_b.json"):
        assert json.loads((case / name).read_text()) == json.loads((bundled / name).read_text()), name
    from SpineDARTLib.fit.masks2d import read_instance_masks
    from SpineDARTLib.xray import read_xray

    for v in ("xray_a.png", "xray_b.png"):
        a, b = read_xray(case / v), read_xray(bundled / v)
        assert np.allclose(a.projection.P, b.projection.P)
        assert np.abs(a.image - b.image).max() < 1e-4
    sizes = [read_xray(bundled / v).projection.image_size for v in ("xray_a.png", "xray_b.png")]
    ma, mb = read_instance_masks(case / "masks.npz", sizes), read_instance_masks(bundled / "masks.npz", sizes)
    assert all(ma[i].keys() == mb[i].keys() and all((ma[i][k] == mb[i][k]).all() for k in ma[i]) for i in range(2))


def test_locator_skips_a_resources_folder_without_the_marker(tmp_path, monkeypatch):
    """In a Slicer install tree the library's parent has the modules' own Resources/ (icons):
    the locator must not take it for the shipped resources."""
    from SpineDARTLib.errors import UserError

    pkg = tmp_path / "qt-scripted-modules" / "SpineDARTLib"
    pkg.mkdir(parents=True)
    (tmp_path / "qt-scripted-modules" / "Resources" / "Icons").mkdir(parents=True)
    monkeypatch.setattr(resources, "_CANDIDATES", (pkg / "_resources", pkg.parent / "Resources"))
    with pytest.raises(UserError, match="not found"):
        resources.resources_dir()
    good = pkg / "_resources"
    good.mkdir()
    (good / "README.md").write_text(resources._MARKER_TITLE + "\n")
    assert resources.resources_dir() == good
