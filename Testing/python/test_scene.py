"""Spine scenes: consecutive vertebrae stacked with physiological curvature, labelled with
TotalSegmentator-v2 ids, inside a body with thoracic organs."""

from __future__ import annotations

import numpy as np
import pytest

from SpineDARTLib.anatomy.levels import LEVELS
from SpineDARTLib.anatomy.scene import HU, _chain, build_scene
from SpineDARTLib.errors import UserError
from SpineDARTLib.labelmaps import TOTALSEG_V2


def test_chain_stacks_levels_cranially_with_kyphosis_and_lordosis():
    heights = dict.fromkeys(LEVELS, 22.0)
    poses = _chain("T12", heights, np.random.default_rng(3))
    z = np.array([poses[lv][:3, 3][2] for lv in LEVELS])
    assert (np.diff(z) < 0).all()  # T1 on top, L5 at the bottom
    y = {lv: poses[lv][:3, 3][1] for lv in LEVELS}
    # Kyphosis: mid-thoracic vertebrae lie behind the line joining T1 and T12; lordosis: L3 in
    # front of the line joining L1 and L5.
    assert y["T6"] < 0.5 * (y["T1"] + y["T12"]) - 5
    assert y["L3"] > 0.5 * (y["L1"] + y["L5"]) + 3
    again = _chain("T12", heights, np.random.default_rng(3))
    assert all(np.array_equal(poses[lv], again[lv]) for lv in LEVELS)


@pytest.fixture(scope="module")
def scene():
    return build_scene("T12", 11, fractured=True, spacing_mm=2.0, options={"table": True, "metal": True})


def test_scene_labels_landmarks_and_tissues(scene):
    levels = [v.level for v in scene.vertebrae]
    assert 3 <= len(levels) <= 13 and "T12" in levels
    assert levels == [lv for lv in LEVELS if lv in levels]  # consecutive, cranial first
    ids = set(np.unique(scene.labels)) - {0}
    assert ids == {TOTALSEG_V2[lv] for lv in levels}
    A = scene.affine
    for v in scene.vertebrae:
        # The body centre landmark lies in its own vertebra's label (world frame is consistent).
        ijk = np.round(np.linalg.solve(A[:3, :3], v.annotation.landmarks["BC"] - A[:3, 3])).astype(int)
        assert scene.labels[tuple(ijk)] == TOTALSEG_V2[v.level]
        # Left stays left in the world: the left pedicle centre is at smaller x than the right.
        assert v.annotation.landmarks["PCL"][0] < v.annotation.landmarks["PCR"][0]
    target = scene.vertebra("T12")
    assert target.target and target.phantom.params.fracture is not None and scene.extras["osteoporotic"]
    hu = scene.hu
    assert hu.dtype == np.float32 and (hu == HU["air"]).any() and (np.abs(hu - HU["lung"]) < 1).any()
    assert hu.max() >= 3000  # the metal cannula
    assert scene.extras["options"]["table"] and "table_y_mm" in scene.extras


def test_bad_scene_requests():
    with pytest.raises(UserError, match="unknown vertebral level"):
        build_scene("S1", 1)
    with pytest.raises(UserError, match="voxel size"):
        build_scene("L2", 1, spacing_mm=5.0)
