"""The shape model type: PCA with size kept, annotation and interior points carried by the
modes, numpy/torch instances, save/load with a card."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from SpineDARTLib.errors import UserError
from SpineDARTLib.ssm import ANNOTATIONS, ShapeModel, load_model, pca_model, save_model
from SpineDARTLib.ssm.pca import _rigid


@pytest.fixture(scope="module")
def base():
    from SpineDARTLib.anatomy import generate
    from SpineDARTLib.anatomy.landmarks import annotate_mesh

    ph = generate("L3", 0, 2.0)
    an = annotate_mesh(ph.vertices, ph.faces)
    ann = np.array(
        [an.landmarks[k] for k in ANNOTATIONS[:10]]
        + [an.trajectories[s][p] for s in ("left", "right") for p in ("entry", "target")]
    )
    return ph, np.vstack([ph.vertices, ann])


def _member(x0, scale, a, b, rng):
    c = x0.mean(0)
    x = c + scale * (x0 - c)
    x = x + a * np.c_[0.08 * (x[:, 0] - c[0]), np.zeros(len(x)), np.zeros(len(x))]  # wider
    x = x + b * np.c_[np.zeros(len(x)), np.zeros(len(x)), 0.002 * (x[:, 1] - c[1]) ** 2]  # bent
    R = Rotation.from_rotvec(rng.normal(0, 0.1, 3)).as_matrix()
    return x @ R.T + rng.normal(0, 5.0, 3)


@pytest.fixture(scope="module")
def model(base):
    ph, x0 = base
    rng = np.random.default_rng(0)
    params = rng.normal(0, 1, (12, 3)) * [0.08, 1.0, 1.0] + [1.0, 0.0, 0.0]
    members = np.stack([_member(x0, *p, rng) for p in params])
    levels = ["L3"] * 6 + ["L4"] * 6
    return pca_model(members, ph.faces, ph.labels, len(ph.vertices), ANNOTATIONS, levels, n_modes=5)


def test_modes_capture_the_population_and_keep_size(model, base):
    ph, x0 = base
    ve = model.card["variance_explained_cumulative"]
    assert ve[2] > 0.999  # three generating parameters: three modes
    sa = slice(0, model.n_surface + model.n_annotations)
    flat = model.modes[:, sa].reshape(model.n_modes, -1)
    assert np.allclose(flat @ flat.T, np.eye(model.n_modes), atol=1e-8)
    # A held-out member scaled by 1.1 comes back at its size (members are aligned rigidly only).
    target = _member(x0, 1.1, 0.4, -0.3, np.random.default_rng(9))
    R, t = _rigid(target[sa], model.mean[sa])
    b = model.project(target @ R.T + t, n_modes=3)
    fit = model.instance(b)
    err = np.linalg.norm(fit[sa] - (target @ R.T + t)[sa], axis=1)
    assert err.max() < 0.05  # to 0.05 mm, so at its 1.1× size: nothing was normalised away
    rms = np.sqrt(((fit[model.surface_slice] - fit[model.surface_slice].mean(0)) ** 2).sum(1).mean())
    rms0 = np.sqrt(((model.mean[model.surface_slice] - model.mean[model.surface_slice].mean(0)) ** 2).sum(1).mean())
    assert rms / rms0 > 1.05


def test_annotations_and_interior_follow_the_instance(model):
    from SpineDARTLib.meshing import signed_distance

    b = np.array([2.0, -1.0, 1.0])
    x = model.instance(b)
    ann = model.annotations(x)
    assert list(ann) == list(ANNOTATIONS)
    v = model.surface(x)
    inner = model.interior(x)
    d = signed_distance(v, model.faces, inner)
    # Interior cells reach half a cell (0.75 mm) outside the mean surface by construction (partial
    # volume); carried by the modes, they stay within 0.5 mm more of the deformed surface.
    d0 = signed_distance(model.surface(model.mean), model.faces, model.interior(model.mean))
    assert d0.max() <= 0.75 + 1e-6
    assert np.mean(d < 1.25) > 0.99 and np.median(d) < np.median(d0) + 0.3
    assert len(model.level_mean_coeffs) == 2 and model.level_mean_coeffs["L3"].shape == (model.n_modes,)


def test_torch_instance_matches_numpy_and_has_gradients(model):
    torch = pytest.importorskip("torch")
    b = np.array([0.5, -1.2, 0.3, 0.0, 0.1])
    rv, t = np.array([0.05, -0.1, 0.2]), np.array([3.0, -2.0, 1.0])
    xt = model.instance_torch(torch.tensor(b, requires_grad=True), torch.tensor(rv), torch.tensor(t))
    assert np.allclose(xt.detach().numpy(), model.instance(b, rv, t), atol=1e-9)
    bt = torch.zeros(model.n_modes, dtype=torch.float64, requires_grad=True)
    model.instance_torch(bt)[:, 0].sum().backward()
    assert np.allclose(bt.grad.numpy(), model.std * model.modes[:, :, 0].sum(1))


def test_save_load_round_trip_and_tampering(model, tmp_path):
    p = save_model(model, tmp_path / "toy.npz")
    again = load_model(p)
    assert np.array_equal(again.mean, model.mean) and np.array_equal(again.modes, model.modes)
    assert again.annotation_names == model.annotation_names and again.levels == ("L3", "L4")
    card = json.loads((tmp_path / "toy.json").read_text())
    assert card["schema"] == "spinedart.ssm-card/1" and card["n_members"] == 12
    data = bytearray(p.read_bytes())
    data[-40] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(UserError, match="hash differs"):
        load_model(p)
    (tmp_path / "toy.json").unlink()
    with pytest.raises(UserError, match="no card"):
        load_model(p)


def test_bad_builds_and_coefficients(model, base):
    ph, x0 = base
    with pytest.raises(UserError, match="cannot give"):
        pca_model(np.stack([x0, x0]), ph.faces, ph.labels, len(ph.vertices), ANNOTATIONS, ["L3", "L3"], n_modes=5)
    with pytest.raises(UserError, match="coefficients"):
        model.instance(np.zeros(9))
    with pytest.raises(UserError, match="not finite"):
        model.instance([np.nan])
    assert isinstance(model, ShapeModel)


def test_ssm_info_cli(model, tmp_path, run_cli):
    p = save_model(model, tmp_path / "toy.npz")
    rc, out, err = run_cli("ssm-info", p, "--json")
    assert rc == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert info["levels"] == ["L3", "L4"] and info["n_members"] == 12 and info["n_modes"] == 5
    assert len(info["variance_explained_cumulative"]) == 5 and info["annotations"] == list(ANNOTATIONS)
    assert info["n_vertices"] == model.n_surface
    rc, _, err = run_cli("ssm-info", tmp_path / "missing.npz")
    assert rc == 2 and "not found" in err and len(err.strip().splitlines()) == 1
