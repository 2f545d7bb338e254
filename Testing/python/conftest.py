"""Shared fixtures. Tests run on the CPU with tiny configurations (CI: 2 cores, no GPU)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def run_cli(capsys):
    """Run ``spinedart`` in-process; returns (exit code, stdout, stderr)."""
    from SpineDARTLib.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run


@pytest.fixture(scope="session")
def small_maps(tmp_path_factory):
    """T10-T12 of the real label map with T9 and L1 cut by the crop, in three conventions."""
    nib = pytest.importorskip("nibabel")
    from SpineDARTLib.labelmaps import TOTALSEG_V1, TOTALSEG_V2, VERSE
    from SpineDARTLib.realct import data_dir

    out = tmp_path_factory.mktemp("maps")
    img = nib.load(str(data_dir() / "mask.nii.gz"))
    lab = np.asarray(img.dataobj).astype(np.int16)
    ks = np.where(np.isin(lab, [TOTALSEG_V2["T10"], TOTALSEG_V2["T12"]]).any(axis=(0, 1)))[0]
    k0, k1 = ks.min() - 3, ks.max() + 4
    # In-plane, 20 voxels (14 mm) around the spine: small volumes keep the DRRs of these cases cheap.
    spine = np.isin(lab[:, :, k0:k1], list(TOTALSEG_V2.values()))
    i0, i1 = np.flatnonzero(spine.any(axis=(1, 2)))[[0, -1]] + [-20, 21]
    j0, j1 = np.flatnonzero(spine.any(axis=(0, 2)))[[0, -1]] + [-20, 21]
    A = img.affine.copy()
    A[:3, 3] = A[:3, :3] @ np.array([i0, j0, k0]) + A[:3, 3]
    crop = lab[i0:i1, j0:j1, k0:k1]
    paths = {}
    for name, table in (("ts2", TOTALSEG_V2), ("verse", VERSE), ("ts1", TOTALSEG_V1)):
        conv = np.zeros(crop.shape, np.uint8)
        for lv, i in TOTALSEG_V2.items():
            conv[crop == i] = table[lv]
        paths[name] = out / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(conv, A), str(paths[name]))
    paths["empty"] = out / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.uint8), np.eye(4)), str(paths["empty"]))
    ct = np.asarray(nib.load(str(data_dir() / "cxr.nii.gz")).dataobj)[i0:i1, j0:j1, k0:k1]
    paths["ct"] = out / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ct, A), str(paths["ct"]))
    paths["ct_other_grid"] = out / "ct2.nii.gz"
    nib.save(nib.Nifti1Image(ct[:, :, 1:], A), str(paths["ct_other_grid"]))
    return paths


@pytest.fixture(scope="session")
def synth_set(tmp_path_factory):
    """One small data-engine case (a fractured L4 with its neighbours, orthogonal 96² views) in
    ``<root>/a``; tests that write into a case copy it first."""
    from SpineDARTLib.synth import run_synth

    out = tmp_path_factory.mktemp("synth")
    run_synth(out / "a", 1, ["L4"], "ort", seed=3, fractured=1.0, detector_px=96, progress=False)
    return out


@pytest.fixture
def mrml_scene():
    """A slicer-core MRML scene with the application and markups logics attached."""
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    from SpineDARTLib import mrml

    scene = mrml.new_scene()
    yield scene
    mrml.release_scene(scene)
