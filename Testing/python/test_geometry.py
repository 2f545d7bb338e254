"""Projection, C-arm model, triangulation, epipolar geometry, view-angle checks."""

from __future__ import annotations

import numpy as np
import pytest

from SpineDARTLib.errors import GeometryError, UserError
from SpineDARTLib.geometry import (
    CArmGeometry,
    Projection,
    epipolar_distance,
    from_carm,
    triangulate,
    view_angle_deg,
    view_pair_check,
)

SID, SDD = 620.0, 1020.0


def carm(a=0.0, b=0.0, **kw) -> Projection:
    kw.setdefault("image_size", (512, 512))
    kw.setdefault("detector_size_mm", (300.0, 300.0))
    return from_carm(a, b, SID, SDD, **kw)


def random_camera(rng, mirrored: bool) -> Projection:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[0] *= -1
    K = np.array(
        [[rng.uniform(800, 1200), rng.uniform(-2, 2), rng.uniform(200, 300)], [0, 0, rng.uniform(200, 300)], [0, 0, 1]]
    )
    K[1, 1] = K[0, 0] * rng.uniform(0.98, 1.02)
    if mirrored:
        K[0, 0] *= -1
    C = rng.normal(size=3) * 500
    du = 0.5
    return Projection.from_KRt(K, q, -q @ C, (512, 512), (du, du * abs(K[0, 0]) / K[1, 1]))


@pytest.mark.parametrize("mirrored", [False, True])
def test_krt_round_trip(rng, mirrored):
    for _ in range(20):
        p = random_camera(rng, mirrored)
        K, R, t = p.K, p.R, p.t
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-10) and np.isclose(np.linalg.det(R), 1.0)
        assert K[1, 1] > 0 and np.isclose(K[2, 2], 1.0) and abs(K[1, 0]) < 1e-9
        assert (K[0, 0] < 0) == mirrored == p.mirrored
        q = Projection.from_KRt(K, R, t, p.image_size, p.pixel_spacing_mm)
        assert np.allclose(q.P, p.P, atol=1e-9 * np.abs(p.P).max())


def test_project_back_project_round_trip(rng):
    p = carm(23.0, -11.0, isocenter_mm=(5.0, -7.0, 30.0))
    X = rng.normal(size=(50, 3)) * 60 + p.isocenter_mm
    uv, depth = p.project(X, return_depth=True)
    src, d = p.back_project(uv)
    assert np.allclose(src, p.source_mm)
    # X lies on its ray, in front of the source.
    along = (X - src) @ d.T
    t = np.diag(along)
    assert np.all(t > 0)
    assert np.allclose(src + t[:, None] * d, X, atol=1e-8)
    assert np.allclose(p.point_at_depth(uv, depth), X, atol=1e-8)
    assert np.all(depth > 0)


def test_ap_worked_case():
    """AP, head-first supine: source 620 mm behind the isocentre, detector 400 mm in front of it."""
    p = carm()
    assert np.allclose(p.source_mm, [0, -620, 0])
    assert np.allclose(p.view_direction, [0, 1, 0])
    assert np.isclose(p.isocenter_distance_mm, 620.0) and np.isclose(p.detector_distance_mm, 1020.0)
    assert np.allclose(p.principal_point_px, [255.5, 255.5])
    # Magnification 1020/620 at the isocentre; 300/512 mm pixels.
    f = SDD / (300 / 512)
    uv = p.project(np.array([[10.0, 0, 0], [0, 0, 10.0], [0, 0, 0]]))
    assert np.allclose(uv[0], [255.5 - f * 10 / 620, 255.5])  # patient's right → image left
    assert np.allclose(uv[1], [255.5, 255.5 - f * 10 / 620])  # head → image top
    assert np.allclose(uv[2], [255.5, 255.5])
    origin, du, dv = p.detector_axes_mm()
    assert np.allclose(origin, [255.5 * 300 / 512, 400, 255.5 * 300 / 512])
    assert np.allclose(du, [-300 / 512, 0, 0]) and np.allclose(dv, [0, 0, -300 / 512])


def test_lateral_and_cranial_worked_cases():
    lat = carm(90.0)  # LAO 90: detector on the patient's left, source on the right
    assert np.allclose(lat.source_mm, [620, 0, 0], atol=1e-9)
    assert np.allclose(lat.view_direction, [-1, 0, 0])
    # Seen from the patient's left, anterior is on the image's left.
    assert lat.project(np.array([[0, 10.0, 0]]))[0, 0] < 255.5
    rao = carm(-90.0)
    assert np.allclose(rao.source_mm, [-620, 0, 0], atol=1e-9)
    cra = carm(0.0, 30.0)  # cranial 30: detector tilted towards the head
    d = np.array([0, np.cos(np.radians(30)), np.sin(np.radians(30))])
    assert np.allclose(cra.view_direction, d)
    assert np.allclose(cra.source_mm, -SID * d)
    # Primary then secondary about the *rotated* lateral axis.
    both = carm(40.0, 20.0)
    a, b = np.radians(40), np.radians(20)
    assert np.allclose(both.view_direction, [-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])


def test_patient_positions_flip_the_right_axes():
    hfs, hfp, ffs = carm(), carm(patient_position="HFP"), carm(patient_position="FFS")
    right, head = np.array([[10.0, 0, 0]]), np.array([[0, 0, 10.0]])
    assert np.allclose(hfp.source_mm, [0, 620, 0])  # prone: the source below the table is anterior
    assert np.allclose(hfp.view_direction, [0, -1, 0])
    assert hfs.project(right)[0, 0] < 255.5 < hfp.project(right)[0, 0]  # left/right flipped
    assert np.isclose(hfp.project(head)[0, 1], hfs.project(head)[0, 1])  # head stays up
    assert ffs.project(head)[0, 1] > 255.5 and ffs.project(right)[0, 0] > 255.5  # feet first: both flip
    hfdl = carm(patient_position="HFDL")  # lying on the left side: a vertical beam is lateral
    assert np.allclose(hfdl.view_direction, [1, 0, 0]) and np.allclose(hfdl.source_mm, [-620, 0, 0])
    with pytest.raises(GeometryError, match="patient position"):
        carm(patient_position="XYZ")


def test_detector_offset_and_flips():
    p = carm(detector_offset_mm=(6.0, -3.0))
    assert np.allclose(p.principal_point_px, [255.5 + 6 / (300 / 512), 255.5 - 3 / (300 / 512)])
    fu, fv, base = carm(flip_u=True), carm(flip_v=True), carm()
    X = np.array([[12.0, 3.0, -7.0]])
    b = base.project(X)[0]
    assert np.allclose(fu.project(X)[0], [511 - b[0], b[1]])
    assert np.allclose(fv.project(X)[0], [b[0], 511 - b[1]])
    assert fu.mirrored != base.mirrored


def test_carm_validation():
    with pytest.raises(GeometryError, match="not less than"):
        from_carm(0, 0, 1100, 1020, (10, 10), pixel_spacing_mm=(1, 1))
    with pytest.raises(GeometryError, match="NaN"):
        CArmGeometry(float("nan"), 0, 600, 1000, (10, 10), (1, 1))
    with pytest.raises(GeometryError, match="exactly one"):
        from_carm(0, 0, 600, 1000, (10, 10))


def test_projection_validation():
    good = carm().P
    with pytest.raises(GeometryError, match="NaN"):
        Projection(np.where(np.eye(3, 4) > 0, np.nan, good), (512, 512), (0.5, 0.5))
    with pytest.raises(GeometryError, match="rank"):
        Projection(np.vstack([good[0], good[0], good[2]]), (512, 512), (300 / 512, 300 / 512))
    with pytest.raises(GeometryError, match="3x4"):
        Projection(np.eye(3), (512, 512), (0.5, 0.5))
    with pytest.raises(GeometryError, match="image_size"):
        Projection(good, (512, 0), (0.5, 0.5))
    with pytest.raises(GeometryError, match="contradicts P"):
        Projection(good, (512, 512), (300 / 512, 0.7))


def test_resized_keeps_world_points_consistent(rng):
    p = carm(15, 5)
    q = p.resized((256, 256))
    X = rng.normal(size=(10, 3)) * 40
    assert np.allclose(q.project(X), (p.project(X) + 0.5) / 2 - 0.5)
    assert np.isclose(q.detector_distance_mm, p.detector_distance_mm)
    assert np.allclose(q.source_mm, p.source_mm)


def test_triangulation_noise_free_and_noisy(rng):
    views = [carm(0, 0), carm(90, 0), carm(35, 12, isocenter_mm=(3, 2, 1))]
    X = rng.normal(size=(40, 3)) * 50
    obs = [v.project(X) for v in views]
    for subset in ([0, 1], [0, 2], [0, 1, 2]):
        tri = triangulate([views[i] for i in subset], [obs[i] for i in subset])
        assert np.abs(tri.points_mm - X).max() < 0.01
        assert np.nanmax(tri.reprojection_px) < 1e-6
    # Graceful degradation: error grows with the noise, and the reprojection error reports it.
    errs = []
    for sigma in (0.25, 1.0, 4.0):
        noisy = [o + rng.normal(size=o.shape) * sigma for o in obs[:2]]
        tri = triangulate(views[:2], noisy)
        errs.append(np.sqrt(np.mean(np.sum((tri.points_mm - X) ** 2, axis=1))))
        assert 0.3 * sigma < np.nanmean(tri.rms_px) < 1.5 * sigma
    assert errs[0] < errs[1] < errs[2] and errs[2] < 4.0 * 0.6 * 4  # ~0.4 mm/px at the isocentre
    # Unobserved points: NaN where fewer than two views see a point.
    missing = [obs[0].copy(), obs[1].copy()]
    missing[1][3] = np.nan
    tri = triangulate(views[:2], missing)
    assert np.isnan(tri.points_mm[3]).all() and tri.n_views[3] == 1
    assert np.abs(np.delete(tri.points_mm, 3, axis=0) - np.delete(X, 3, axis=0)).max() < 0.01
    with pytest.raises(GeometryError, match="two views"):
        triangulate(views[:1], obs[:1])


def test_epipolar_distance(rng):
    a, b = carm(0, 0), carm(70, -10, isocenter_mm=(0, 5, 0))
    X = rng.normal(size=(20, 3)) * 40
    ua, ub = a.project(X), b.project(X)
    assert np.abs(epipolar_distance(a, b, ua, ub)).max() < 1e-6
    assert np.abs(epipolar_distance(b, a, ub, ua)).max() < 1e-6
    wrong = epipolar_distance(a, b, ua, np.roll(ub, 1, axis=0))
    assert np.median(wrong) > 5.0


def test_view_angle_checks():
    assert np.isclose(view_angle_deg(carm(0), carm(90)), 90.0)
    assert np.isclose(view_angle_deg(carm(0), carm(180)), 0.0)
    ang, warn = view_pair_check(carm(0), carm(90))
    assert warn is None and np.isclose(ang, 90)
    ang, warn = view_pair_check(carm(0), carm(10))
    assert np.isclose(ang, 10) and "10.0 deg" in warn
    with pytest.raises(GeometryError, match="3.0 deg apart"):
        view_pair_check(carm(0), carm(3))


def test_pixel_centers_are_row_major_image_order():
    p = from_carm(0, 0, SID, SDD, (4, 3), pixel_spacing_mm=(1.0, 1.0))
    uv = p.pixel_centers()
    assert uv.shape == (12, 2)
    img = np.arange(12).reshape(3, 4)  # image[v, u]
    u, v = uv[7].astype(int)
    assert img[v, u] == 7 and (u, v) == (3, 1)


def test_miscalibration_has_exact_sizes_and_directions_fixed_by_the_seed():
    """The robustness study's wrong geometry: each error exactly as large as asked, in directions that
    depend on the seed only (a sweep over sizes moves along the same directions)."""
    from SpineDARTLib.geometry.perturb import Miscalibration, perturb_projection

    p = from_carm(30.0, 10.0, 620.0, 1020.0, (256, 256), (1.1, 1.1), isocenter_mm=(5.0, -3.0, 40.0))
    same, _ = perturb_projection(p, Miscalibration(), np.random.default_rng(0))
    np.testing.assert_allclose(same.P, p.P, atol=1e-9)
    w, how = perturb_projection(p, Miscalibration(2.0, 10.0, 5.0), np.random.default_rng(0))
    angle = np.degrees(np.arccos(np.clip(w.view_direction @ p.view_direction, -1, 1)))
    assert abs(angle - 2.0) < 1e-6, angle
    # The C-arm turned about its isocentre: the source stays 620 mm from it.
    assert abs(np.linalg.norm(w.source_mm - p.isocenter_mm) - 620.0) < 1e-6
    assert abs(abs(w.detector_distance_mm - p.detector_distance_mm) - 10.0) < 1e-6
    assert np.isclose(w.detector_distance_mm - p.detector_distance_mm, how["distance_mm"])
    shift_px = np.linalg.norm(w.principal_point_px - p.principal_point_px)
    assert abs(shift_px * 1.1 - 5.0) < 1e-6
    _, how_big = perturb_projection(p, Miscalibration(4.0, 20.0, 10.0), np.random.default_rng(0))
    assert how_big["axis"] == how["axis"] and np.sign(how_big["distance_mm"]) == np.sign(how["distance_mm"])
    _, how_other = perturb_projection(p, Miscalibration(2.0, 10.0, 5.0), np.random.default_rng(1))
    assert how_other["axis"] != how["axis"]


@pytest.mark.parametrize("text", ["2,10", "a,b,c", "2,10,-5", "90,10,5", "nan,1,1", "2,10,5,1"])
def test_miscalibration_refuses_bad_text(text):
    from SpineDARTLib.geometry.perturb import Miscalibration

    with pytest.raises(UserError, match="--perturb-geometry"):
        Miscalibration.parse(text)
