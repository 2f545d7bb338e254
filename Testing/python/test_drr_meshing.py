"""diffdrr with our geometry (exact against a closed form), meshing, and splat-vs-diffdrr agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SpineDARTLib.geometry import from_carm
from SpineDARTLib.meshing import mesh_from_mask, orient_outward, signed_volume, voxelize_mesh

pytest.importorskip("diffdrr", reason="diffdrr not installed")

from SpineDARTLib.drr import DiffDRR  # noqa: E402


def _box_chords(p, lo, hi):
    w, h = p.image_size
    s, d = p.back_project(p.pixel_centers())
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - s) / d, (hi - s) / d
    tmin = np.nanmax(np.minimum(t1, t2), 1)
    tmax = np.nanmin(np.maximum(t1, t2), 1)
    return np.clip(tmax - tmin, 0, None).reshape(h, w)


def test_diffdrr_rays_follow_our_projection_exactly():
    """An off-centre box in a volume with anisotropic voxels: diffdrr's Siddon image equals the
    closed-form chord lengths in every view, so no reorientation, recentring or mirroring slipped in."""
    sp = np.array([0.5, 0.7, 0.9])
    A = np.diag([*sp, 1.0])
    A[:3, 3] = [-20.0, -15.0, -17.0]
    vol = np.zeros((80, 60, 70), np.float32)
    i0, i1 = np.array([50, 20, 10]), np.array([70, 45, 40])
    vol[i0[0] : i1[0], i0[1] : i1[1], i0[2] : i1[2]] = 1.0
    lo, hi = A[:3, 3] + (i0 - 0.5) * sp, A[:3, 3] + (i1 - 0.5) * sp
    drr = DiffDRR(vol, A, dtype=torch.float64)
    views = [from_carm(a, b, 620, 1020, (64, 48), pixel_spacing_mm=(1.0, 1.0)) for a, b in [(0, 0), (90, 0), (30, 20)]]
    imgs = drr.render(views).numpy()
    for p, img in zip(views, imgs, strict=True):
        ref = _box_chords(p, lo, hi)
        assert ref.max() > 10
        assert np.abs(img - ref).max() < 1e-3 * ref.max()


def test_diffdrr_pose_moves_the_volume():
    """Rendering with a pose equals rendering the moved box (object moved, rays fixed)."""
    A = np.eye(4)
    A[:3, 3] = [-10.0, -10.0, -10.0]
    vol = np.zeros((20, 20, 20), np.float32)
    vol[5:12, 4:15, 8:16] = 1.0
    drr = DiffDRR(vol, A, dtype=torch.float64)
    p = from_carm(0, 0, 620, 1020, (48, 48), pixel_spacing_mm=(1.0, 1.0))
    t = torch.tensor([3.0, 0.0, -2.0], dtype=torch.float64)
    moved = drr.render([p], translation=t)[0].numpy()
    lo, hi = A[:3, 3] + np.array([5, 4, 8]) - 0.5, A[:3, 3] + np.array([12, 15, 16]) - 0.5
    ref = _box_chords(p, lo + t.numpy(), hi + t.numpy())
    assert np.abs(moved - ref).max() < 1e-3 * ref.max()


def test_mesh_from_mask_is_outward_and_watertight():
    import trimesh

    m = np.zeros((20, 24, 18), bool)
    m[4:15, 6:20, 3:12] = True
    A = np.diag([-0.8, 0.8, 2.0, 1.0])  # a mirrored (LPS-like) grid flips triangle orientation
    v, f = mesh_from_mask(m, A)
    assert signed_volume(v, f) > 0
    tm = trimesh.Trimesh(v, f, process=False)
    assert tm.is_watertight
    # The marching-cubes surface at 0.5 encloses roughly the voxels' volume.
    assert abs(signed_volume(v, f) / (m.sum() * 0.8 * 0.8 * 2.0) - 1) < 0.15
    assert np.array_equal(orient_outward(v, f[:, ::-1]), f)


def test_voxelize_mesh_volume_and_position():
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    v = np.asarray(s.vertices) + [5.0, -3.0, 2.0]
    occ, A = voxelize_mesh(v, np.asarray(s.faces), spacing_mm=1.0, supersample=3)
    assert abs(occ.sum() - s.volume) / s.volume < 0.01
    idx = np.argwhere(occ > 0)
    w = occ[tuple(idx.T)]
    centroid = (idx * w[:, None]).sum(0) / w.sum() @ A[:3, :3].T + A[:3, 3]
    assert np.allclose(centroid, [5.0, -3.0, 2.0], atol=0.05)


@pytest.fixture(scope="module")
def t12():
    from SpineDARTLib import realct

    return realct.vertebra_mesh("T12")


def test_splat_matches_diffdrr_on_a_real_vertebra(t12):
    """The renderer's accuracy contract: a vertebra drawn as a solid (uniform density) vs diffdrr on
    the same surface voxelised at 1 mm: NCC >= 0.98, integral within 2 %, relative RMSE <= 10 %."""
    from SpineDARTLib.render import SplatRenderer, solid_from_mesh

    v, f = t12
    cloud = solid_from_mesh(v, f, 1.5, cortical_density=1.0, cancellous_density=1.0)
    occ, A = voxelize_mesh(v, f, 1.0, supersample=2)
    c = v.mean(0)
    views = [from_carm(a, 0, 620, 1020, (128, 128), pixel_spacing_mm=(300 / 128,) * 2, isocenter_mm=c) for a in (0, 90)]
    ref = DiffDRR(occ, A).render(views).numpy()
    P = torch.as_tensor(np.stack([p.P for p in views]), dtype=torch.float32)
    got = SplatRenderer().render(*cloud.torch(), P, (128, 128)).images.numpy()
    for a, b in zip(got, ref, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.98
        assert abs(a.sum() / b.sum() - 1) <= 0.02
        assert np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)) <= 0.10


def test_splat_matches_diffdrr_on_a_shape_model_instance():
    """The same contract on what the fit draws: an instance of the shipped L1-L5 model (coefficients
    from seed 0, up to 2σ), its interior points at uniform density, two 256² views."""
    from SpineDARTLib.bench.render_speed import run

    res = run("ssm", None, 256, 2, "L1", repeats=1, diffdrr_repeats=1, seed=0)
    assert res["splat_mode"] == "layered" and res["n_gaussians"] > 15000
    assert res["ncc"] >= 0.98 and abs(res["integral_ratio"] - 1) <= 0.02 and res["rel_rmse"] <= 0.10, res


def test_bench_render_cli_reports_the_contract_keys(run_cli):
    rc, out, err = run_cli("bench-render", "--size", "48", "--repeats", "1", "--n-gaussians", "3000", "--json")
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    for key in (
        "mode",
        "n_gaussians",
        "size",
        "views",
        "splat_ms",
        "diffdrr_ms",
        "speedup",
        "ncc",
        "integral_ratio",
        "rel_rmse",
        "peak_mb",
        "device",
    ):
        assert key in res, key
    assert res["mode"] == "ssm" and res["size"] == 48 and res["views"] == 2
    assert res["ncc"] > 0.9 and res["splat_ms"] > 0 and res["diffdrr_ms"] > 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--size", "8"], "--size"),
        (["--views", "9"], "--views"),
        (["--mode", "voxels", "--level", "L4"], "--level"),  # not complete in the diffdrr CT
        (["--level", "S1"], "unknown vertebral level"),
        (["--seed", "-1"], "--seed"),
        (["--n-gaussians", "5"], "--n-gaussians"),
        (["--mode", "x"], "invalid choice"),
        (["--mode", "voxels", "--mesh", "x.stl"], "--mesh only applies"),
    ],
)
def test_bench_render_bad_options(run_cli, args, match):
    rc, _, err = run_cli("bench-render", *args)
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1


def test_grid_points_cover_the_box_with_its_affine():
    from SpineDARTLib.meshing import grid_points

    pts, shape, A = grid_points(np.array([-1.0, 0.0, 2.0]), np.array([1.0, 1.2, 2.0]), 0.5)
    assert shape == (5, 4, 1) and pts.shape == (20, 3)
    ijk = np.argwhere(np.ones(shape))  # same row-major order
    assert np.allclose(ijk @ A[:3, :3].T + A[:3, 3], pts)
    assert pts[:, 1].max() >= 1.2
