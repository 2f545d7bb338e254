"""Every user mistake: one line naming the file and the fix, exit code 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from SpineDARTLib.geometry import CArmGeometry, from_carm
from SpineDARTLib.xray import sidecar_dict
from SpineDARTLib.xray.dicom import write_dicom_xray

GOOD = from_carm(0, 0, 600, 1000, (32, 24), pixel_spacing_mm=(0.5, 0.5))


def _png(path: Path, size=(32, 24), mode="L") -> Path:
    from PIL import Image

    Image.new(mode, size, 0 if mode == "L" else (0, 0, 0)).save(path)
    return path


def _side(path: Path, **over) -> Path:
    d = sidecar_dict(GOOD)
    d.update(over)
    path.write_text(json.dumps(d))
    return path


def case_missing_file(t):
    return ["inspect", t / "nope.png"], "nope.png"


def case_directory(t):
    (t / "adir").mkdir()
    return ["inspect", t / "adir"], "adir"


def case_empty_file(t):
    (t / "empty.png").write_bytes(b"")
    return ["inspect", t / "empty.png"], "empty.png"


def case_unsupported_type(t):
    (t / "notes.txt").write_text("hello")
    return ["inspect", t / "notes.txt"], "notes.txt"


def case_corrupt_png(t):
    (t / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    _side(t / "bad.json")
    return ["inspect", t / "bad.png"], "bad.png"


def case_no_geometry(t):
    _png(t / "alone.png")
    return ["inspect", t / "alone.png"], "alone.png"


def case_sidecar_not_json(t):
    _png(t / "a.png")
    (t / "a.json").write_text("{ this is not json")
    return ["inspect", t / "a.png"], "a.json"


def case_sidecar_wrong_schema(t):
    _png(t / "b.png")
    _side(t / "b.json", schema="spinedart.xray-geometry/99")
    return ["inspect", t / "b.png"], "b.json"


def case_nonfinite_p(t):
    _png(t / "c.png")
    d = sidecar_dict(GOOD)
    text = json.dumps(d).replace(str(d["P"][0][0]), "NaN", 1)
    (t / "c.json").write_text(text)
    return ["inspect", t / "c.png"], "c.json"


def case_rank_deficient_p(t):
    _png(t / "d.png")
    P = GOOD.P.copy()
    P[1] = P[0]
    _side(t / "d.json", P=P.tolist())
    return ["inspect", t / "d.png"], "d.json"


def case_size_mismatch(t):
    _png(t / "e.png", size=(40, 24))
    _side(t / "e.json")
    return ["inspect", t / "e.png"], "e.png"


def case_contradictory_p_and_carm(t):
    _png(t / "f.png")
    carm = CArmGeometry(30.0, 0.0, 600.0, 1000.0, (32, 24), (0.5, 0.5)).to_dict()
    for k in ("image_size", "pixel_spacing_mm"):
        carm.pop(k)
    _side(t / "f.json", carm=carm)
    return ["inspect", t / "f.png"], "f.json"


def case_spacing_contradicts_p(t):
    _png(t / "g.png")
    _side(t / "g.json", pixel_spacing_mm=[0.5, 0.8])
    return ["inspect", t / "g.png"], "g.json"


def case_nonfinite_pixels(t):
    import tifffile

    img = np.zeros((24, 32), np.float32)
    img[3, 4] = np.nan
    tifffile.imwrite(t / "h.tif", img)
    _side(t / "h.json")
    return ["inspect", t / "h.tif"], "h.tif"


def case_dicom_missing_distance(t):
    carm = CArmGeometry(0.0, 0.0, 600.0, 1000.0, (32, 24), (0.5, 0.5))
    p = write_dicom_xray(t / "i.dcm", np.zeros((24, 32), np.uint16), carm, extra={"DistanceSourceToDetector": None})
    return ["inspect", p], "i.dcm"


def case_corrupt_dicom(t):
    (t / "j.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    return ["inspect", t / "j.dcm"], "j.dcm"


def case_colour_png(t):
    _png(t / "k.png", mode="RGB")
    _side(t / "k.json")
    return ["inspect", t / "k.png"], "k.png"


def case_geometry_is_directory(t):
    _png(t / "l.png")
    (t / "geo").mkdir()
    return ["inspect", t / "l.png", "--geometry", t / "geo"], "geo"


def _carm_side(path: Path, **carm) -> Path:
    """A C-arm-form sidecar; ``carm`` overrides the defaults (AP, SID 600, SDD 1000)."""
    base = {"primary_angle_deg": 0, "secondary_angle_deg": 0, "source_isocenter_mm": 600, "source_detector_mm": 1000}
    d = {
        "schema": "spinedart.xray-geometry/1",
        "image_size": [32, 24],
        "pixel_spacing_mm": [0.5, 0.5],
        "carm": base | carm,
    }
    path.write_text(json.dumps(d))
    return path


def case_unknown_patient_position(t):
    _png(t / "m.png")
    _carm_side(t / "m.json", patient_position="UPSIDEDOWN")
    return ["inspect", t / "m.png"], "m.json"


def case_isocentre_beyond_detector(t):
    _png(t / "n.png")
    _carm_side(t / "n.json", source_isocenter_mm=1200)
    return ["inspect", t / "n.png"], "n.json"


def case_missing_field(t):
    _png(t / "o.png")
    d = sidecar_dict(GOOD)
    del d["image_size"]
    (t / "o.json").write_text(json.dumps(d))
    return ["inspect", t / "o.png"], "o.json"


def case_bad_option(t):
    return ["inspect", "--frobnicate", "x.png"], None


def case_no_command(t):
    return [], None


def case_demo_out_is_file(t):
    (t / "out.txt").write_text("x")
    return ["demo", "--out", t / "out.txt"], "out.txt"


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


def test_there_are_at_least_twelve_cases():
    assert len(CASES) >= 12


@pytest.mark.parametrize("make", CASES, ids=[c.__name__[5:] for c in CASES])
def test_user_error_is_one_line_with_fix_and_exit_2(tmp_path, run_cli, make):
    args, name = make(tmp_path)
    rc, out, err = run_cli(*args)
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spinedart: error: ")
    assert "fix:" in lines[0]
    assert "Traceback" not in err and "usage:" not in err
    if name is not None:
        assert name in lines[0], lines[0]


@pytest.mark.parametrize("make", [case_sidecar_wrong_schema, case_corrupt_dicom, case_bad_option])
def test_process_level_exit_code_and_no_traceback(tmp_path, make):
    """The real process, not just main(): exit status 2 and a single stderr line, even where a
    third-party reader would print its own warnings."""
    args, _ = make(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "SpineDARTLib.cli", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_version():
    proc = subprocess.run(
        [sys.executable, "-m", "SpineDARTLib.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.startswith("spinedart ")
