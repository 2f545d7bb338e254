"""Initialisation from 2-D evidence: triangulated landmarks → similarity → pose + shape (scale
absorbed by the coefficients), the centroid backup, the landmarks file, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from SpineDARTLib.anatomy import generate
from SpineDARTLib.anatomy.landmarks import annotate_mesh
from SpineDARTLib.errors import GeometryError, SchemaError, UserError
from SpineDARTLib.fit import (
    Landmarks2D,
    VertebraEvidence,
    initialise,
    read_landmarks_2d,
    write_landmarks_2d,
)
from SpineDARTLib.geometry.carm import from_carm
from SpineDARTLib.ssm import load_bundled

NAMES = ("BC", "SEC", "IEC", "PCL", "PCR", "SPT", "TPL", "TPR", "VAP", "PWM")


@pytest.fixture(scope="module")
def model():
    return load_bundled("L1-L5")


def _views(centre, angles=(0.0, 90.0)):
    return [
        from_carm(a, 0.0, 620.0, 1020.0, (512, 512), detector_size_mm=(300.0, 300.0), isocenter_mm=tuple(centre))
        for a in angles
    ]


def _case(scale=1.0, seed=5, rot_deg=(8.0, -5.0, 12.0), shift=(20.0, -15.0, 40.0)):
    """A generated L3 (optionally scaled), posed in the world: its surface and rule landmarks."""
    ph = generate("L3", seed, 1.5)
    c = ph.vertices.mean(0)
    R = Rotation.from_euler("xyz", rot_deg, degrees=True).as_matrix()
    v = (scale * (ph.vertices - c)) @ R.T + c + np.asarray(shift)
    an = annotate_mesh(v, ph.faces)
    return v, ph.faces, an, R


def _evidence(projs, points, names, rng, noise_px=1.0):
    return [
        VertebraEvidence({n: P.project(points[n][None, :])[0] + rng.normal(0, noise_px, 2) for n in names})
        for P in projs
    ]


def test_landmark_init_recovers_pose_and_absorbs_scale(model):
    scales = {}
    for scale in (1.0, 1.15):
        v, f, an, R = _case(scale)
        projs = _views(an.landmarks["BC"] + np.array([5.0, -4.0, 6.0]))
        rng = np.random.default_rng(0)
        res = initialise(model, "L3", projs, _evidence(projs, an.landmarks, NAMES, rng))
        assert res.path == "landmarks" and res.common == list(NAMES) and res.warnings == []
        assert max(res.triangulation_px.values()) < 3.0
        lm = model.annotations(model.instance(res.coeffs, res.rotvec, res.translation))
        err = np.array([np.linalg.norm(lm[n] - an.landmarks[n]) for n in NAMES])
        assert np.linalg.norm(lm["BC"] - an.landmarks["BC"]) < 2.5 and err.mean() < 3.5, err.round(2)
        # Orientation: the model's anatomical axes follow the vertebra's.
        R_fit = Rotation.from_rotvec(res.rotvec).as_matrix()
        assert np.degrees(Rotation.from_matrix(R_fit @ R.T).magnitude()) < 6.0
        # The scale the similarity finds (relative to the level's mean) is carried by the shape
        # coefficients, not applied to the mean.
        assert res.size_ratio == pytest.approx(res.similarity_scale, abs=0.05)
        assert res.reprojection_px < 6.0
        scales[scale] = res
    assert scales[1.15].similarity_scale / scales[1.0].similarity_scale == pytest.approx(1.15, abs=0.04)
    size_mode = np.argmax(np.abs(scales[1.15].coeffs - scales[1.0].coeffs))
    assert size_mode == 0  # the 15 % larger vertebra differs mostly on mode 1 (size)


def test_three_landmarks_suffice_and_fewer_fall_back_to_centroids(model):
    v, f, an, _ = _case()
    projs = _views(an.landmarks["BC"])
    rng = np.random.default_rng(1)
    three = initialise(model, "L3", projs, _evidence(projs, an.landmarks, ("BC", "SPT", "PCL"), rng))
    assert three.path == "landmarks" and len(three.common) == 3
    lm3 = model.annotations(model.instance(three.coeffs, three.rotvec, three.translation))
    assert np.linalg.norm(lm3["BC"] - an.landmarks["BC"]) < 4.0
    ev = _evidence(projs, an.landmarks, ("BC", "SPT"), rng)
    for P, e in zip(projs, ev, strict=True):
        e.centroid = P.project(v.mean(0)[None, :])[0]
    backup = initialise(model, "L3", projs, ev)
    assert backup.path == "backup" and "patient frame" in backup.warnings[0]
    solid = model.interior(model.instance(backup.coeffs, backup.rotvec, backup.translation))
    assert np.linalg.norm(solid.mean(0) - v.mean(0)) < 3.0
    assert np.allclose(backup.coeffs, model.level_mean_coeffs["L3"])


def test_bad_evidence_gets_one_line(model):
    v, f, an, _ = _case()
    rng = np.random.default_rng(2)
    projs = _views(an.landmarks["BC"])
    with pytest.raises(UserError, match="mark at least 3"):
        initialise(model, "L3", projs, _evidence(projs, an.landmarks, ("BC", "SPT"), rng))
    close = _views(an.landmarks["BC"], angles=(0.0, 3.0))
    with pytest.raises(GeometryError, match="too close"):
        initialise(model, "L3", close, _evidence(close, an.landmarks, NAMES, rng))
    with pytest.raises(UserError, match="two views"):
        initialise(model, "L3", projs[:1], _evidence(projs[:1], an.landmarks, NAMES, rng))
    with pytest.raises(UserError, match="does not cover T4"):
        initialise(model, "T4", projs, _evidence(projs, an.landmarks, NAMES, rng))


def test_landmarks_file_round_trip_and_refusals(tmp_path):
    ev = VertebraEvidence({"BC": np.array([10.5, 20.25]), "SPT": np.array([1.0, 2.0])}, {"BC": 0.9})
    ev.centroid = np.array([11.0, 19.0])
    lm = Landmarks2D([{"L3": ev}, {"L3": VertebraEvidence({"BC": np.array([3.0, 4.0])})}], ["AP", "LAT"], "test")
    p = write_landmarks_2d(lm, tmp_path / "lm.json")
    back = read_landmarks_2d(p, n_views=2)
    a = back.for_level("L3")
    assert np.allclose(a[0].landmarks["BC"], [10.5, 20.25]) and a[0].confidence == {"BC": 0.9}
    assert np.allclose(a[0].centroid, [11.0, 19.0]) and a[1].centroid is None and back.names == ["AP", "LAT"]
    assert back.for_level("L4")[0].landmarks == {}
    with pytest.raises(UserError, match="2 views but 3 X-rays"):
        read_landmarks_2d(p, n_views=3)
    bad = tmp_path / "bad.json"
    bad.write_text(p.read_text().replace('"BC"', '"XYZ"', 1))
    with pytest.raises(SchemaError, match="XYZ"):
        read_landmarks_2d(bad)
