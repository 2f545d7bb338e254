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


@pytest.fixture
def mrml_scene():
    """A slicer-core MRML scene with the application and markups logics attached."""
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    from SpineDARTLib import mrml

    scene = mrml.new_scene()
    yield scene
    mrml.release_scene(scene)
