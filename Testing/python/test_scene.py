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


@pytest.fixture(scope="module")
def body_pair():
    """The same thoracic scene plain and with the detailed body (2 mm voxels: speed)."""
    kw = {"spacing_mm": 2.0, "options": {"table": False, "metal": False}}
    plain = build_scene("T6", 21, **kw)
    detailed = build_scene("T6", 21, spacing_mm=2.0, options={**kw["options"], "detailed_body": True})
    return plain, detailed


def _voxel(scene, p):
    A = scene.affine
    return tuple(np.round(np.linalg.solve(A[:3, :3], np.asarray(p) - A[:3, 3])).astype(int))


def test_detailed_body_keeps_the_spine_and_places_it_at_the_back(body_pair):
    plain, detailed = body_pair
    # Same vertebrae, poses, landmarks and (on its own grid) labels: only the body around them differs.
    assert [v.level for v in plain.vertebrae] == [v.level for v in detailed.vertebrae]
    for a, b in zip(plain.vertebrae, detailed.vertebrae, strict=True):
        assert np.array_equal(a.pose, b.pose)
        assert np.allclose(a.annotation.landmarks["BC"], b.annotation.landmarks["BC"])
    assert "chest" in detailed.extras and "chest" not in plain.extras
    assert "detailed_body" not in plain.extras["options"]
    again = build_scene("T6", 21, spacing_mm=2.0, options={"table": False, "metal": False, "detailed_body": True})
    assert np.array_equal(again.hu, detailed.hu)  # seeded
    # The back skin lies 10-35 mm behind the spinous tips (the plain scene: far more, from a loose box).
    for scene, lo, hi in ((detailed, 10.0, 35.0), (plain, 35.0, 200.0)):
        t = scene.extras["torso"]
        back = t["centre_y_mm"] - t["semi_y_mm"]
        post = min(v.world_vertices[:, 1].min() for v in scene.vertebrae)
        assert lo - 0.01 <= post - back <= hi, (post, back)
    # A chest's vertebral body sits in the back half of the body; its lungs lie mostly in front of it.
    target = detailed.vertebra("T6").annotation.landmarks["BC"]
    t = detailed.extras["torso"]
    assert target[1] < t["centre_y_mm"]
    A = detailed.affine
    lung = np.argwhere(detailed.hu < -700)
    lung_y = (lung @ A[:3, :3].T + A[:3, 3])[:, 1]
    assert np.median(lung_y) > target[1] + 10


def test_detailed_body_draws_trachea_sternum_and_soft_rib_ends(body_pair):
    _, scene = body_pair
    bc = {v.level: v.annotation.landmarks["BC"] for v in scene.vertebrae}
    t = scene.extras["torso"]
    hu = scene.hu
    # Trachea: air inside the body, in front of the T3 body.
    ys = np.arange(bc["T3"][1] + 10, bc["T3"][1] + 60, 2.0)
    line = [hu[_voxel(scene, [bc["T3"][0] + dx, y, bc["T3"][2]])] for y in ys for dx in (-4.0, 0.0, 4.0)]
    assert min(line) <= -990
    # Sternum: bone at the front midline between the notch and the xiphoid.
    z_notch, z_xiphoid = scene.extras["chest"]["sternum_mm"]
    z = 0.5 * (z_notch + z_xiphoid)
    ys = np.arange(t["centre_y_mm"], t["centre_y_mm"] + t["semi_y_mm"], 2.0)
    front = [hu[_voxel(scene, [0.0, y, z])] for y in ys]
    assert max(front) > 300
    # Ribs do not reach across the midline at the front: beside the sternum's body (|x| 30-45 mm,
    # below the manubrium and clavicles), in the front quarter, nothing is denser than cartilage (the
    # plain ribs sweep on across).
    for scene_, limit in ((scene, 300.0), (body_pair[0], None)):
        i = [_voxel(scene_, [x, 0, 0])[0] for x in (-45.0, -30.0, 30.0, 45.0)]
        ts = scene_.extras["torso"]
        j0 = _voxel(scene_, [0, ts["centre_y_mm"] + 0.5 * ts["semi_y_mm"], 0])[1]
        k0, k1 = sorted(int(np.clip(_voxel(scene_, [0, 0, z])[2], 0, hu.shape[2])) for z in (z_xiphoid, z_notch - 50))
        assert k1 - k0 > 10
        band = np.concatenate([scene_.hu[i[0] : i[1], j0:, k0:k1].ravel(), scene_.hu[i[2] : i[3], j0:, k0:k1].ravel()])
        assert band.max() < 300 if limit else band.max() >= 500


def test_detailed_body_soft_tissues_and_the_plain_streams(body_pair):
    plain, scene = body_pair
    chest = scene.extras["chest"]
    assert chest["diaphragm_dome_mm"]["right"] > chest["diaphragm_dome_mm"]["left"]  # the liver's side
    # The heart is drawn over the lungs, not under them: soft tissue at its centre, left of the midline.
    c = np.asarray(chest["heart_centre_mm"])
    assert c[0] < 0 and abs(scene.hu[_voxel(scene, c)] - HU["heart"]) < 1
    # Labels: the same voxels, shifted by the whole voxels the back moved.
    shift = round((scene.affine[1, 3] - plain.affine[1, 3]) / scene.affine[1, 1])
    assert plain.labels.shape == scene.labels.shape
    n = plain.labels.shape[1]
    if shift >= 0:  # detailed voxel j sits where plain voxel j + shift does
        a, b = plain.labels[:, shift:], scene.labels[:, : n - shift]
    else:
        a, b = plain.labels[:, : n + shift], scene.labels[:, -shift:]
    assert np.array_equal(a, b) and (a > 0).sum() == (plain.labels > 0).sum()
    # The detailed body draws from its own stream: the table and the cannula of the plain scene stay.
    kw = {"spacing_mm": 2.0, "options": {"table": True, "metal": True}}
    with_stuff = build_scene("T6", 21, **kw)
    detailed = build_scene("T6", 21, spacing_mm=2.0, options={**kw["options"], "detailed_body": True})
    assert detailed.extras["metal"] == with_stuff.extras["metal"]
    for k in ("semi_x_mm", "semi_y_mm", "fat_mm"):
        assert detailed.extras["torso"][k] == with_stuff.extras["torso"][k]
    back = detailed.extras["torso"]["centre_y_mm"] - detailed.extras["torso"]["semi_y_mm"]
    assert detailed.extras["table_y_mm"] < back  # the table is under the (moved) back
