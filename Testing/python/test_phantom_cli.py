"""``spinedart phantom``: files Slicer can read, a valid vertebra.json, deterministic per seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SpineDARTLib.schemas import VERTEBRA_V1, load_json


def _run(run_cli, out, *extra):
    rc, stdout, err = run_cli(
        "phantom",
        "--level",
        "T9",
        "--seed",
        "7",
        "--mesh-spacing",
        "1.5",
        "--volume-spacing",
        "1.0",
        "--out",
        out,
        *extra,
    )
    assert rc == 0, err
    return load_json(out / "vertebra.json", VERTEBRA_V1)


def test_phantom_writes_mesh_volume_and_ground_truth(tmp_path, run_cli):
    import nibabel as nib

    from SpineDARTLib.mesh_io import read_mesh
    from SpineDARTLib.provenance import sha256_file

    doc = _run(run_cli, tmp_path / "a", "--fracture", "biconcave:3", "--osteoporotic")
    assert doc["level"] == "T9" and doc["seed"] == 7 and doc["healthy"] is False
    assert doc["parameters"]["fracture"]["kind"] == "biconcave" and doc["parameters"]["fracture"]["grade"] == 3
    for name, meta in doc["files"].items():
        assert sha256_file(tmp_path / "a" / name) == meta["sha256"]
    v, _ = read_mesh(tmp_path / "a" / "vertebra.vtp")  # back in RAS
    lm = {k: np.array(p) for k, p in doc["landmarks"].items()}
    assert lm["PCL"][0] < lm["BC"][0] < lm["PCR"][0]
    assert v[:, 1].min() == pytest.approx(lm["SPT"][1], abs=2.0)
    img = nib.load(str(tmp_path / "a" / "density.nii.gz"))
    hu = np.asarray(img.dataobj)
    assert 50 <= doc["parameters"]["cancellous_hu"] <= 120 and hu.max() > 900
    # The landmark BC is inside bone in the volume, too.
    ijk = np.round(np.linalg.solve(img.affine, [*lm["BC"], 1.0])[:3]).astype(int)
    assert hu[tuple(ijk)] > 40


def test_phantom_is_deterministic(tmp_path, run_cli):
    a = _run(run_cli, tmp_path / "a")
    b = _run(run_cli, tmp_path / "b")
    assert a["landmarks"] == b["landmarks"] and a["parameters"] == b["parameters"]
    assert a["files"]["vertebra.vtp"]["sha256"] == b["files"]["vertebra.vtp"]["sha256"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--level", "L9", "--seed", "1"], "unknown vertebral level"),
        (["--level", "L1", "--seed", "-3"], "seed"),
        (["--level", "L1", "--seed", "1", "--fracture", "crush:5"], "unknown"),
        (["--level", "L1", "--seed", "1", "--mesh-spacing", "0"], "out of range"),
        (["--level", "L1", "--seed", "1", "--volume-spacing", "9"], "volume spacing"),
        (["--level", "L1", "--seed", "1", "--warp", "12"], "warp amplitude"),
        (["--level", "L1", "--seed", "1", "--warp", "nan"], "warp amplitude"),
    ],
)
def test_phantom_bad_input(tmp_path, run_cli, args, match):
    rc, _, err = run_cli("phantom", *args, "--out", tmp_path / "x")
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1
    assert json.dumps(err)  # one printable line
