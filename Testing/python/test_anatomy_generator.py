"""The procedural vertebra generator: topology, labels, laterality, variation, fractures, density."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from SpineDARTLib.anatomy import (
    LEVELS,
    PART_NAMES,
    default_gauge,
    density_volume,
    generate,
    region_of,
    sample_params,
)
from SpineDARTLib.errors import UserError


def _mesh(ph) -> trimesh.Trimesh:
    return trimesh.Trimesh(ph.vertices, ph.faces, process=False)


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_is_a_watertight_genus_one_solid(level):
    ph = generate(level, seed=3, mesh_spacing_mm=1.25)
    tm = _mesh(ph)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.euler_number == 0  # genus 1: the canal is the one through-hole
    assert len(tm.split(only_watertight=False)) == 1
    assert tm.volume > 0  # outward normals
    assert set(np.unique(ph.labels)) == set(range(len(PART_NAMES)))  # every part is present


def test_parts_sit_on_the_patients_sides():
    """Laterality in RAS (+x = patient right): left parts at x < 0, right at x > 0; spinous process
    most posterior; body most anterior."""
    ph = generate("L3", seed=11, mesh_spacing_mm=1.0)
    v, lab = ph.vertices, ph.labels

    def part(name):
        return v[lab == PART_NAMES.index(name)]

    assert part("pedicle_left")[:, 0].mean() < 0 < part("pedicle_right")[:, 0].mean()
    assert part("transverse_process_left")[:, 0].mean() < 0 < part("transverse_process_right")[:, 0].mean()
    assert part("spinous_process")[:, 1].min() == pytest.approx(v[:, 1].min())
    assert part("body")[:, 1].max() == pytest.approx(v[:, 1].max())
    assert abs(part("spinous_process")[:, 0].mean()) < 2.0  # on the midline


def test_deterministic_per_seed_and_varied_across_seeds():
    a, b = generate("T8", seed=5, mesh_spacing_mm=1.5), generate("T8", seed=5, mesh_spacing_mm=1.5)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.labels, b.labels)
    c = generate("T8", seed=6, mesh_spacing_mm=1.5)
    assert a.params != c.params


def test_population_variation_reaches_published_spread():
    """CV of volume, body width, pedicle width and TP span >= 8 % (published SD/mean 8-12 %)."""
    vols, body_w, tp_span, ped_w = [], [], [], []
    for seed in range(40):
        ph = generate("L2", seed=seed, mesh_spacing_mm=1.5)
        vols.append(_mesh(ph).volume)
        body = ph.vertices[ph.labels == PART_NAMES.index("body")]
        body_w.append(np.ptp(body[:, 0]))
        tp_span.append(np.ptp(ph.vertices[:, 0]))
        ped_w.append(ph.params.pedicle_width)
    for name, x in (("volume", vols), ("body width", body_w), ("TP span", tp_span), ("pedicle width", ped_w)):
        cv = np.std(x) / np.mean(x)
        assert cv >= 0.08, (name, cv)
    # Shared size factor: body width and TP span correlate as in real spines.
    assert np.corrcoef(body_w, tp_span)[0, 1] > 0.4


@pytest.mark.parametrize("kind", ["wedge", "biconcave", "crush"])
def test_fractures_lose_height_by_grade(kind):
    healthy = generate("L1", seed=2, mesh_spacing_mm=1.0)
    hb = healthy.vertices[healthy.labels == 0]
    losses = []
    for grade in (1, 2, 3):
        ph = generate("L1", seed=2, mesh_spacing_mm=1.0, fracture=f"{kind}:{grade}")
        tm = _mesh(ph)
        assert tm.is_watertight and tm.euler_number == 0 and len(tm.split(only_watertight=False)) == 1
        assert ph.params.fracture.kind == kind and ph.params.fracture.grade == grade
        body = ph.vertices[ph.labels == 0]
        # Height where the fracture bites: anterior third (wedge), centre (biconcave), whole (crush).
        if kind == "wedge":
            sel_h, sel_f = hb[:, 1] > hb[:, 1].max() - 6, body[:, 1] > body[:, 1].max() - 6
        else:
            sel_h = (np.abs(hb[:, 0]) < 4) & (np.abs(hb[:, 1] - hb[:, 1].mean()) < 4)
            sel_f = (np.abs(body[:, 0]) < 4) & (np.abs(body[:, 1] - body[:, 1].mean()) < 4)
        losses.append(1 - np.ptp(body[sel_f, 2]) / np.ptp(hb[sel_h, 2]))
    assert losses[0] < losses[1] < losses[2]
    assert losses[0] > 0.1 and losses[2] > 0.3


def test_density_volume_shell_core_canal_and_cement():
    ph = generate("L4", seed=1, mesh_spacing_mm=1.5)
    hu, A = density_volume(ph, spacing_mm=1.0)
    pr = ph.params
    assert hu.max() <= pr.cortical_hu + 1e-3 and hu.min() >= 0.0
    body_centre = np.linalg.solve(A, np.array([0.0, ph.model.body_yc, 0.0, 1.0]))[:3].round().astype(int)
    assert hu[tuple(body_centre)] == pytest.approx(pr.cancellous_hu)
    canal = np.linalg.solve(A, np.array([0.0, ph.model.canal_yc, 0.0, 1.0]))[:3].round().astype(int)
    assert hu[tuple(canal)] == 0.0
    assert ((hu > 0) & (hu < pr.cancellous_hu * 0.99)).any()  # partial-volume boundary voxels
    assert (np.isclose(hu, pr.cortical_hu)).sum() > 100
    osteo = generate("L4", seed=1, mesh_spacing_mm=1.5, osteoporotic=True)
    assert 50 <= osteo.params.cancellous_hu <= 120 < 200 <= pr.cancellous_hu <= 300
    cem = generate("L4", seed=1, mesh_spacing_mm=1.5, cemented=True)
    hu_c, _ = density_volume(cem, spacing_mm=1.0)
    assert hu_c.max() > 2000


def test_out_of_family_warp_keeps_topology_and_moves_the_surface():
    from SpineDARTLib.anatomy.vertebra import WARP_MAX_MM, VertebraSDF

    plain = generate("L2", seed=5, mesh_spacing_mm=1.25)
    warped = generate("L2", seed=5, mesh_spacing_mm=1.25, warp_mm=WARP_MAX_MM)
    again = generate("L2", seed=5, mesh_spacing_mm=1.25, warp_mm=WARP_MAX_MM)
    assert np.array_equal(warped.vertices, again.vertices)  # deterministic
    tm = _mesh(warped)
    assert tm.is_watertight and tm.euler_number == 0 and len(tm.split(only_watertight=False)) == 1
    assert set(np.unique(warped.labels)) == set(range(len(PART_NAMES)))
    # The warp is a diffeomorphism by construction (gradient bound < 1), and it really moves the
    # surface: the warped mesh's points lie millimetres off the unwarped surface.
    model = VertebraSDF(warped.params)
    assert model.warp.max_gradient() < 1.0
    off = np.abs(plain.model(warped.vertices))
    assert 0.5 < np.median(off) <= WARP_MAX_MM and off.max() > 2.0
    # The displacement never exceeds the amplitude.
    p = np.random.default_rng(0).uniform(-80, 80, size=(5000, 3))
    assert np.linalg.norm(model.warp(p), axis=1).max() <= WARP_MAX_MM + 1e-9
    # Ground truth by rule still lands in the (warped) pedicles.
    from SpineDARTLib.anatomy.landmarks import annotate_mesh

    an = annotate_mesh(warped.vertices, warped.faces)
    assert warped.model.parts(an.landmarks["PCL"][None])["pedicle_left"][0] < 0
    assert warped.model.parts(an.landmarks["PCR"][None])["pedicle_right"][0] < 0


def test_mean_params_sit_at_the_table_means_and_inside_the_population():
    from SpineDARTLib.anatomy.levels import MORPHOMETRY
    from SpineDARTLib.anatomy.vertebra import mean_params

    m, t = mean_params("L4"), MORPHOMETRY["L4"]
    assert m.size_factor == 1.0 and (m.body_width, m.pedicle_width, m.tp_span) == (
        t.body_width,
        t.pedicle_width,
        t.tp_span,
    )
    drawn = np.array([sample_params("L4", s).body_width for s in range(40)])
    assert abs(drawn.mean() - m.body_width) < 2 * drawn.std() / np.sqrt(40) + 0.5


def test_levels_regions_gauges_and_bad_input():
    assert region_of("T6") == "T5-T8" and region_of("L5") == "L1-L5"
    assert (default_gauge("T2"), default_gauge("T9"), default_gauge("L3")) == (15, 13, 11)
    with pytest.raises(UserError, match="unknown vertebral level"):
        sample_params("L9", 1)
    with pytest.raises(UserError, match="TYPE:GRADE"):
        sample_params("L1", 1, fracture="wedge")
    with pytest.raises(UserError, match="unknown"):
        sample_params("L1", 1, fracture="spiral:2")
    with pytest.raises(UserError, match="seed"):
        sample_params("L1", -4)
    with pytest.raises(UserError, match="warp amplitude"):
        sample_params("L1", 1, warp_mm=-1.0)
