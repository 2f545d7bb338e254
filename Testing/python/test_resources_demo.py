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
from SpineDARTLib.demo import MAX_BEAD_ERROR_MM, build_demo_case, run_demo

REPO = Path(__file__).resolve().parents[2]


def test_locator_finds_source_tree_resources():
    assert resources.resources_dir() == REPO / "Resources"
    case = resources.demo_case_dir()
    for name in ("xray_a.png", "xray_a.json", "xray_b.png", "xray_b.json", "phantom.json"):
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
    assert (found / "phantom.json").is_file()


def test_demo_runs_and_recovers_the_beads(tmp_path, run_cli):
    rc, out, err = run_cli("demo", "--out", tmp_path / "out", "--json")
    assert rc == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"] is True
    assert report["beads_matched"] == report["beads_true"] == 7
    assert report["bead_error_mm"]["max"] < MAX_BEAD_ERROR_MM
    assert report["noise_free_triangulation_error_mm"] < 0.01
    assert report["views"]["a"]["geometry"] == "calibrated"
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["ok"] is True and len(saved["provenance"]["inputs"]) == 5
    assert all(len(i["sha256"]) == 64 for i in saved["provenance"]["inputs"])
    for name in ("overlay_a.png", "overlay_b.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000


def test_demo_fails_loudly_when_geometry_is_wrong(tmp_path):
    """A wrong calibration (view B's angle off by 3 deg) must make the demo report failure."""
    case = build_demo_case(tmp_path / "case")
    side = json.loads((case / "xray_b.json").read_text())
    del side["P"]  # keep only the C-arm form, then perturb it
    side["carm"]["primary_angle_deg"] += 3.0
    (case / "xray_b.json").write_text(json.dumps(side))
    report = run_demo(tmp_path / "out", case_dir=case, echo=False)
    assert report["ok"] is False


def test_bundled_case_is_reproducible_from_its_seed(tmp_path):
    case = build_demo_case(tmp_path / "case")
    bundled = resources.demo_case_dir()
    assert json.loads((case / "phantom.json").read_text()) == json.loads((bundled / "phantom.json").read_text())
    from SpineDARTLib.xray import read_xray

    for v in ("xray_a.png", "xray_b.png"):
        a, b = read_xray(case / v), read_xray(bundled / v)
        assert np.allclose(a.projection.P, b.projection.P)
        assert np.abs(a.image - b.image).max() < 1e-4


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
