"""The splat renderer: physics against closed forms, gradients, invariances, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SpineDARTLib.beads import sphere_line_integrals
from SpineDARTLib.geometry import from_carm
from SpineDARTLib.render import (
    RenderInputError,
    SplatRenderer,
    from_volume,
    rotation_matrix,
    solid_from_mesh,
    transform_gaussians,
)

SIZE = (96, 80)


def view(a=10.0, b=5.0, size=SIZE, spacing=1.5, iso=(0.0, 0.0, 0.0)):
    return from_carm(a, b, 620, 1020, size, pixel_spacing_mm=(spacing, spacing), isocenter_mm=iso)


def exact_line_integrals(proj, mean, cov, mass):
    """∫ m·N₃(s + t·d; μ, Σ) dt along every pixel ray, in closed form (no first-order approximation)."""
    w, h = proj.image_size
    src, d = proj.back_project(proj.pixel_centers())
    L = np.linalg.inv(cov)
    r0 = src - mean
    dLd = np.einsum("ni,ij,nj->n", d, L, d)
    dLr = d @ L @ r0
    q = r0 @ L @ r0 - dLr**2 / dLd
    val = mass / ((2 * np.pi) ** 1.5 * np.sqrt(np.linalg.det(cov))) * np.sqrt(2 * np.pi / dLd) * np.exp(-0.5 * q)
    return val.reshape(h, w)


def t64(x):
    return torch.tensor(np.array(x, dtype=np.float64))


@pytest.mark.parametrize("mode", ["patch", "separable", "layered"])
def test_single_isotropic_gaussian_matches_line_integral(mode):
    p = view()
    # On the ray through pixel (40, 30), so the image samples the peak exactly.
    mean, cov, mass = p.point_at_depth(np.array([[40.0, 30.0]]), 600.0)[0], np.eye(3) * 2.0**2, 10.0
    img = SplatRenderer(mode=mode).render(t64([mean]), t64([cov]), t64([mass]), t64(p.P), SIZE).images[0].numpy()
    ref = exact_line_integrals(p, mean, cov, mass)
    # Layered: a footprint between two blur layers is their mixture, exact in mass and variance only.
    assert np.abs(img - ref).max() < (3e-3 if mode == "layered" else 1e-3) * ref.max()
    assert abs(img.sum() / ref.sum() - 1) < 1e-3
    # The peak is the chord integral through the centre: m / (2πσ²).
    assert np.isclose(img.max(), mass / (2 * np.pi * 4.0), rtol=5e-3)


def test_anisotropic_gaussian_uses_the_exact_jacobian(rng):
    p = view(35.0, -12.0)
    A = rng.normal(size=(3, 3))
    cov = A @ A.T + np.eye(3)  # a tilted, elongated Gaussian
    mean = np.array([-12.0, 20.0, -6.0])
    img = SplatRenderer(mode="patch").render(t64([mean]), t64([cov]), t64([3.0]), t64(p.P), SIZE).images[0].numpy()
    ref = exact_line_integrals(p, mean, cov, 3.0)
    assert np.abs(img - ref).max() < 5e-3 * ref.max()
    assert abs(img.sum() / ref.sum() - 1) < 5e-3


def _sphere_mesh(radius, center):
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return np.asarray(s.vertices) + center, np.asarray(s.faces)


def test_solid_ball_matches_analytic_chord():
    """A uniform solid (one density inside) renders as the exact chord length through a sphere."""
    p = view(0.0, 0.0, size=(64, 64), spacing=1.0)
    v, f = _sphere_mesh(12.0, np.array([2.0, 1.0, -3.0]))
    cloud = solid_from_mesh(v, f, spacing_mm=1.0, cortical_density=1.0, cancellous_density=1.0)
    img = SplatRenderer().render(*map(torch.as_tensor, (cloud.means, cloud.covs, cloud.masses)), t64(p.P), (64, 64))
    got = img.images[0].numpy()
    ref = sphere_line_integrals(p, np.array([[2.0, 1.0, -3.0]]), np.array([12.0]), np.array([1.0]))
    ncc = np.corrcoef(got.ravel(), ref.ravel())[0, 1]
    assert ncc > 0.995
    assert abs(got.sum() / ref.sum() - 1) < 0.03  # grid cells vs the true volume of a 12 mm ball


def test_volume_voxels_render_a_box():
    """CT voxels as Gaussians: a uniform box renders its chord length (anisotropic voxels)."""
    vol = np.zeros((30, 24, 12), np.float32)
    vol[5:25, 4:20, 2:10] = 1.0
    A = np.diag([1.0, 1.25, 2.5, 1.0])
    A[:3, 3] = [-15.0, -15.0, -15.0]
    cloud = from_volume(vol, A)
    p = view(0.0, 0.0, size=(64, 64), spacing=1.0)
    got = SplatRenderer().render(*map(torch.as_tensor, (cloud.means, cloud.covs, cloud.masses)), t64(p.P), (64, 64))
    img = got.images[0].numpy()
    # AP view: the beam runs along y, the box is 16 voxels x 1.25 mm = 20 mm deep.
    assert np.isclose(np.median(img[img > 0.9 * img.max()]), 20.0, rtol=0.03)


def _loss(images, weights):
    return (images * weights).sum()


def test_gradients_match_finite_differences(rng):
    p = [view(10.0, 5.0), view(80.0, -5.0)]
    P = t64(np.stack([q.P for q in p]))
    means = t64(rng.normal(size=(12, 3)) * 15)
    covs = t64(np.eye(3)[None].repeat(12, 0) * 4.0)
    masses = t64(rng.uniform(0.5, 2.0, size=12))
    weights = t64(rng.normal(size=(2, SIZE[1], SIZE[0])))
    renderer = SplatRenderer(mode="patch")

    def f(rotvec, trans, Pm, m):
        mm, cc = transform_gaussians(means, covs, rotvec, trans, t64([1.0, 2.0, 3.0]))
        return _loss(renderer.render(mm, cc, m, Pm, SIZE).images, weights)

    args = (t64([0.05, -0.02, 0.03]), t64([0.3, -0.2, 0.1]), P.clone(), masses.clone())
    for a in args:
        a.requires_grad_(True)
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_moving_object_and_camera_together_changes_nothing(rng):
    p = view(25.0, 10.0)
    means = t64(rng.normal(size=(40, 3)) * 12)
    covs = t64(np.eye(3)[None].repeat(40, 0) * 2.5)
    masses = t64(np.ones(40))
    rotvec, trans = t64([0.3, -0.5, 0.2]), t64([14.0, -9.0, 22.0])
    R = rotation_matrix(rotvec).numpy()
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, trans.numpy()
    P2 = p.P @ np.linalg.inv(T)  # the camera moves with the object
    r = SplatRenderer(mode="patch")
    a = r.render(means, covs, masses, t64(p.P), SIZE).images
    mm, cc = transform_gaussians(means, covs, rotvec, trans)
    b = r.render(mm, cc, masses, t64(P2), SIZE).images
    assert torch.allclose(a, b, atol=1e-9 * float(a.max()))


def test_behind_source_and_off_image_contribute_nothing():
    p = view(0.0, 0.0)
    src = p.source_mm
    behind = src - 50 * p.view_direction  # behind the focal spot
    at_source = src.copy()
    off_image = np.array([400.0, 0.0, 0.0])  # far outside the field of view
    means = t64([behind, at_source, off_image])
    means.requires_grad_(True)
    covs = t64(np.eye(3)[None].repeat(3, 0) * 4.0)
    out = SplatRenderer(mode="patch").render(means, covs, t64([1.0, 1.0, 1.0]), t64(p.P), SIZE)
    assert torch.count_nonzero(out.images) == 0
    out.images.sum().backward()
    assert torch.isfinite(means.grad).all()
    sep = SplatRenderer(mode="separable").render(means.detach(), covs, t64([1.0, 1.0, 1.0]), t64(p.P), SIZE)
    assert torch.isfinite(sep.images).all() and float(sep.images.abs().max()) < 1e-12
    # The layered rasteriser needs one visible footprint to size its layers: add one, far from the rest.
    visible = p.point_at_depth(np.array([[20.0, 20.0]]), 600.0)
    m4 = torch.cat([means.detach(), t64(visible)]).requires_grad_(True)
    lay = SplatRenderer(mode="layered").render(
        m4, t64(np.eye(3)[None].repeat(4, 0) * 4.0), t64([1.0] * 4), t64(p.P), SIZE
    )
    alone = SplatRenderer(mode="layered").render(t64(visible), t64([np.eye(3) * 4.0]), t64([1.0]), t64(p.P), SIZE)
    assert torch.allclose(lay.images, alone.images)
    lay.images.sum().backward()
    assert torch.isfinite(m4.grad).all() and float(m4.grad[:3].abs().max()) == 0.0


def test_patch_and_separable_agree_and_instances_sum(rng):
    p = view(5.0, 3.0)
    means = t64(rng.normal(size=(60, 3)) * 15)
    covs = t64(np.eye(3)[None].repeat(60, 0) * 3.0)
    masses = t64(rng.uniform(0.5, 1.5, 60))
    inst = torch.as_tensor(rng.integers(0, 3, 60))
    a = SplatRenderer(mode="patch").render(means, covs, masses, t64(p.P), SIZE, inst, 3)
    b = SplatRenderer(mode="separable").render(means, covs, masses, t64(p.P), SIZE, inst, 3)
    assert a.per_instance.shape == (1, 3, SIZE[1], SIZE[0])
    assert torch.allclose(a.per_instance, b.per_instance, atol=2e-3 * float(b.per_instance.max()))
    assert torch.allclose(a.images, a.per_instance.sum(1))
    sil = a.silhouettes()
    assert float(sil.min()) >= 0 and float(sil.max()) <= 1


def _solid_cloud(rng, n=400, sigma=1.0):
    """Isotropic Gaussians of one size filling a blob, like a solid model's interior points."""
    pts = rng.normal(size=(n, 3)) * np.array([14.0, 10.0, 8.0])
    return t64(pts), t64(np.full(n, sigma**2)), t64(rng.uniform(0.5, 1.5, n))


def test_layered_matches_patches_on_a_solid_and_is_chosen_for_it(rng):
    """Deposit-and-blur draws the same sum of footprints as the patches, per instance, and ``auto``
    picks it for isotropic footprints (a solid) but not for anisotropic ones (CT voxels)."""
    p = [view(10.0, 5.0, spacing=1.0), view(95.0, -5.0, spacing=1.0)]
    P = t64(np.stack([q.P for q in p]))
    means, var, masses = _solid_cloud(rng)
    inst = torch.as_tensor(rng.integers(0, 2, len(means)))
    a = SplatRenderer(mode="patch").render(means, var, masses, P, SIZE, inst, 2)
    b = SplatRenderer().render(means, var, masses, P, SIZE, inst, 2)
    assert b.mode == "layered"
    peak = float(a.per_instance.max())
    assert float((a.per_instance - b.per_instance).abs().max()) < 0.01 * peak
    assert abs(float(b.images.sum() / a.images.sum()) - 1) < 1e-3
    # Anisotropic footprints (2.5 mm slices of 0.7 mm voxels): patches, and layered is refused.
    covs = t64(np.diag([0.5, 0.5, 6.0])[None].repeat(len(means), 0))
    assert SplatRenderer().render(means, covs, masses, P, SIZE).mode == "patch"
    with pytest.raises(RenderInputError, match="isotropic"):
        SplatRenderer(mode="layered").render(means, covs, masses, P, SIZE)


def test_layered_gradients_match_finite_differences(rng):
    p = [view(10.0, 5.0, spacing=1.0), view(80.0, -5.0, spacing=1.0)]
    P = t64(np.stack([q.P for q in p]))
    means, var, masses = _solid_cloud(rng, n=60, sigma=1.5)
    weights = t64(rng.normal(size=(2, SIZE[1], SIZE[0])))
    renderer = SplatRenderer(mode="layered")

    def f(rotvec, trans, m):
        mm, cc = transform_gaussians(means, var, rotvec, trans, t64([1.0, 2.0, 3.0]))
        return _loss(renderer.render(mm, cc, m, P, SIZE).images, weights)

    args = (t64([0.05, -0.02, 0.03]), t64([0.3, -0.2, 0.1]), masses.clone())
    for a in args:
        a.requires_grad_(True)
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize(
    ("what", "match"),
    [
        ("nan_means", "means"),
        ("inf_P", "projection"),
        ("rank_P", "degenerate"),
        ("empty", "non-empty"),
        ("nan_mass", "masses"),
    ],
)
def test_bad_input_is_a_clear_error(what, match):
    p = view()
    means, covs, masses, P = t64([[0.0, 0, 0]]), t64([np.eye(3)]), t64([1.0]), t64(p.P)
    if what == "nan_means":
        means = t64([[np.nan, 0, 0]])
    elif what == "inf_P":
        P = P.clone()
        P[0, 0] = np.inf
    elif what == "rank_P":
        P = P.clone()
        P[1] = P[0]
    elif what == "empty":
        means, covs, masses = torch.zeros(0, 3), torch.zeros(0, 3, 3), torch.zeros(0)
    elif what == "nan_mass":
        masses = t64([np.nan])
    with pytest.raises(RenderInputError, match=match):
        SplatRenderer().render(means, covs, masses, P, SIZE)


def test_gsplat_without_cuda_is_refused_clearly():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the refusal path only exists without a GPU")
    from SpineDARTLib.errors import UserError

    with pytest.raises(UserError, match="CUDA"):
        SplatRenderer(backend="gsplat")


def test_empty_mesh_is_refused():
    from SpineDARTLib.errors import UserError

    with pytest.raises(UserError, match="mesh"):
        solid_from_mesh(np.zeros((0, 3)), np.zeros((0, 3), int))


@pytest.mark.parametrize("mode", ["patch", "layered"])
def test_shape_coefficient_gradients_match_finite_differences(mode, rng):
    """The fit's full chain — a shipped shape model's coefficients and pose → its interior points →
    both views — is differentiable, and its gradients are the finite differences' (coarse 5 mm
    cells keep it small; the same code draws every level of detail)."""
    from SpineDARTLib.fit.solid import Solid
    from SpineDARTLib.ssm.io import model_for_level

    model = model_for_level("L1")
    solid = Solid(model, 5.0, dtype=torch.float64)
    size = (48, 48)
    P = t64(np.stack([view(a, b, size, 3.0, iso=model.centre).P for a, b in ((0.0, 0.0), (90.0, 0.0))]))
    var = torch.full((len(solid),), solid.variance, dtype=torch.float64)
    weights = t64(rng.normal(size=(2, 48, 48)))
    renderer = SplatRenderer(mode=mode)

    def f(b, rotvec, trans):
        pts, _ = solid.place(b, rotvec, trans)
        return _loss(renderer.render(pts, var, solid.mass, P, size).images, weights)

    args = (t64(rng.normal(size=model.n_modes) * 0.5), t64([0.02, -0.03, 0.01]), t64([0.5, -0.4, 0.3]))
    for a in args:
        a.requires_grad_(True)
    assert renderer.render(solid.place(*args)[0].detach(), var, solid.mass, P, size).mode == mode
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-5, rtol=1e-3)
