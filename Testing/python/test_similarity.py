"""The learned similarity: windows and crops (geometry), the MASD label, samples from a data-engine
case, a tiny training run (resumable, same weights), the fit's loss options, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from SpineDARTLib.errors import UserError
from SpineDARTLib.fit.similarity_net import (
    TINY,
    SimilarityConfig,
    crop_image,
    crop_torch,
    load_similarity,
    window,
    window_torch,
)
from SpineDARTLib.fit.terms import bench_method_loss, loss_terms
from SpineDARTLib.geometry.projection import Projection
from SpineDARTLib.nets.similarity_data import (
    RAY_JITTER,
    RAY_MM,
    along_ray,
    groups_of,
    masd,
    perturb,
    prepare_case,
    reference_instance,
)
from SpineDARTLib.nets.similarity_train import grouped_order, jitter, rank_metrics, ranking_loss

CFG = SimilarityConfig(**TINY)


def _view() -> Projection:
    """A 200 × 150 view, 1000 mm source-detector, the isocentre 700 mm from the source."""
    K = np.array([[1000 / 0.5, 0, 99.5], [0, 1000 / 0.5, 74.5], [0, 0, 1]])
    R = np.eye(3)
    t = np.array([0.0, 0.0, 700.0])
    return Projection(K @ np.hstack([R, t[:, None]]), (200, 150), (0.5, 0.5))


def test_window_scales_with_magnification_and_is_centred_on_the_point():
    p = _view()
    near, far = np.array([3.0, -2.0, -100.0]), np.array([3.0, -2.0, 100.0])
    a, b = window(p, near, CFG), window(p, far, CFG)
    # 96 mm at 600 mm from the source: 96·2000/600 px wide; at 800 mm: 96·2000/800.
    assert 2 * a.half_px == pytest.approx(96 * 2000 / 600) and 2 * b.half_px == pytest.approx(96 * 2000 / 800)
    c = (CFG.crop_px - 1) / 2
    assert np.allclose(a.projection.project(near[None])[0], [c, c], atol=1e-9)
    # A point 40 mm right of the centre, at its depth, lands 40/96 of the crop away.
    off = a.projection.project((near + [40.0, 0, 0])[None])[0]
    assert off[0] - c == pytest.approx(40 / 96 * CFG.crop_px, rel=1e-6)


def test_crop_samples_the_image_where_the_window_projects():
    p = _view()
    uv0 = np.array([131.3, 60.8])
    vv, uu = np.mgrid[0:150, 0:200]
    image = np.exp(-((uu - uv0[0]) ** 2 + (vv - uv0[1]) ** 2) / (2 * 6.0**2)).astype(np.float32)
    X = p.point_at_depth(uv0[None], 650.0)[0]
    win = window(p, X + [5.0, 3.0, 0.0], SimilarityConfig(crop_px=64, crop_mm=48.0))
    crop = crop_image(image, win)
    expected = win.projection.project(X[None])[0]
    rows, cols = np.mgrid[0:64, 0:64]
    w = crop / crop.sum()
    assert np.allclose([(w * cols).sum(), (w * rows).sum()], expected, atol=0.15)
    # A window wholly outside the image is flat, not an error.
    assert np.ptp(crop_image(image, window(p, X + [400.0, 0, 0], CFG))) < 1e-6


@pytest.mark.parametrize(
    "depth, shift", [(650.0, [5.0, 3.0, 0.0]), (650.0, [60.0, 0.0, 0.0]), (100.0, [0.0, 0.0, 0.0])]
)
def test_window_and_crop_are_differentiable_with_respect_to_the_centre(depth, shift):
    """The window (one implementation for training samples and the fit) is differentiable w.r.t.
    its centre: autograd matches finite differences for the crop's projection (every direction)
    and for the cut pixels (directions parallel to the detector: across depth the pre-filter's
    width changes too, which is not differentiated) — inside the image, partly outside it, and
    where the window enlarges the image (no pre-filter)."""
    p = _view()
    vv, uu = np.mgrid[0:150, 0:200]
    image = (np.sin(uu / 7.0) * np.cos(vv / 5.0) + 0.01 * uu).astype(np.float32)
    cfg = SimilarityConfig(crop_px=64, crop_mm=48.0)
    # An irrational centre: no sample falls on a pixel's edge, where bilinear sampling has a kink.
    X0 = p.point_at_depth(np.array([[120.0 + np.sqrt(2) / 7, 70.0 + np.sqrt(3) / 11]]), depth)[0] + shift
    weights = torch.as_tensor(np.random.default_rng(3).normal(size=(64, 64)))
    P = torch.tensor(p.P)

    def values(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Pc, uv, half = window_torch(P, X, float(p.K[0, 0]), cfg)
        return (Pc * torch.arange(12.0, dtype=Pc.dtype).reshape(3, 4)).sum(), (
            crop_torch(image, uv, half, 64) * weights
        ).sum()

    X = torch.tensor(X0, requires_grad=True)
    proj, crop = values(X)
    g_proj = torch.autograd.grad(proj, X, retain_graph=True)[0].numpy()
    g_crop = torch.autograd.grad(crop, X)[0].numpy()
    h = 1e-5
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        with torch.no_grad():
            (pp, cp), (pm, cm) = values(torch.tensor(X0) + e), values(torch.tensor(X0) - e)
        assert float(pp - pm) / (2 * h) == pytest.approx(g_proj[i], rel=1e-4)
        if i < 2:  # _view's detector is parallel to x and y
            assert float(cp - cm) / (2 * h) == pytest.approx(g_crop[i], rel=1e-3, abs=1e-6)


def test_masd_is_zero_for_the_same_surface_symmetric_and_grows_with_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    a = 10 * a / np.linalg.norm(a, axis=1, keepdims=True)
    b = 10 * (a / np.linalg.norm(a, axis=1, keepdims=True)) * 1.2  # a sphere 2 mm larger
    assert masd(a, a) == 0.0
    assert masd(a, b) == pytest.approx(masd(b, a)) and masd(a, b) == pytest.approx(2.0, abs=0.25)
    assert masd(a, a + [5.0, 0, 0]) > masd(a, a + [1.0, 0, 0])


def test_perturbation_is_seeded_and_bounded():
    ref = {"b": np.zeros(15), "r": np.zeros(3), "t": np.array([1.0, 2.0, 3.0])}
    draws = [perturb(ref, np.random.default_rng(7), 15) for _ in range(2)]
    assert all(np.array_equal(draws[0][0][k], draws[1][0][k]) for k in "brt")
    rng = np.random.default_rng(1)
    hows = [perturb(ref, rng, 15)[1] for _ in range(300)]
    assert max(h["angle_deg"] for h in hows) <= 15.0
    jumps = [h for h in hows if h["jump_mm"]]
    assert 0.04 < len(jumps) / 300 < 0.2 and all(22 <= abs(h["jump_mm"]) <= 34 for h in jumps)


def test_ray_sample_moves_along_the_view_ray():
    """A ray sample stays (nearly) where the reference projects in its view and moves by RAY_MM in
    depth: the instances a view cannot tell apart, which only the other view separates."""
    p = _view()
    ref = {"b": np.zeros(15), "r": np.zeros(3), "t": np.array([10.0, -5.0, 0.0])}
    centre = np.array([3.0, 4.0, 5.0]) + ref["t"]
    rng = np.random.default_rng(3)
    ray = (centre - p.source_mm) / np.linalg.norm(centre - p.source_mm)
    along, across = [], []
    for _ in range(100):
        state, how = along_ray(ref, centre, p, rng)
        d = state["t"] - ref["t"]
        along.append(abs(d @ ray))
        across.append(np.linalg.norm(d - (d @ ray) * ray))
        assert how["magnitude"] <= RAY_JITTER and how["jump_mm"] == 0.0
    assert RAY_MM[0] - 1.5 < min(along) and max(along) < RAY_MM[1] + 1.5
    assert np.median(across) < 0.5 and np.median(along) > 4 * np.median(across) + 2


def test_rank_metrics():
    true = np.array([1.0, 2.0, 3.0, 4.0])
    m = rank_metrics(true * 1.1, true)
    assert m["spearman"] == pytest.approx(1.0) and m["median_rel_error"] == pytest.approx(0.1)
    assert rank_metrics(true[::-1].copy(), true)["spearman"] == pytest.approx(-1.0)
    # Within groups: each vertebra's order right but offset per vertebra → ρ within 1, overall lower.
    true = np.array([1.0, 2.0, 3.0, 1.5, 2.5, 3.5])
    pred = np.array([5.0, 6.0, 7.0, 1.0, 2.0, 3.0])
    m = rank_metrics(pred, true, np.array([0, 0, 0, 1, 1, 1]))
    assert m["spearman_within"] == pytest.approx(1.0) and m["spearman"] < 0.5
    assert rank_metrics(pred, true, np.array([0, 0, 0, 1, 1, 1])[::-1].copy())["spearman_within"] == pytest.approx(1.0)
    assert rank_metrics(-pred, true, np.array([0, 0, 0, 1, 1, 1]))["spearman_within"] == pytest.approx(-1.0)


def test_ranking_loss_rewards_the_order_within_a_group_only():
    y = torch.log(torch.tensor([1.0, 2.0, 4.0, 1.0, 3.0]))
    groups = torch.tensor([0, 0, 0, 1, 1])
    right, wrong = ranking_loss(y * 2, y, groups), ranking_loss(-y, y, groups)
    assert float(right) < 0.01 < float(wrong)
    # Across groups nothing is compared: group 1 predicted far above group 0 costs nothing.
    shifted = y.clone()
    shifted[3:] += 10
    assert float(ranking_loss(shifted * 2, y, groups)) == pytest.approx(float(right), abs=1e-6)
    # Pairs closer than the gap are not ranked; a batch with none gives zero with a graph.
    pred = torch.zeros(3, requires_grad=True)
    loss = ranking_loss(pred, torch.log(torch.tensor([1.0, 1.05, 1.08])), torch.zeros(3, dtype=torch.long))
    loss.backward()
    assert float(loss) == 0.0 and pred.grad is not None
    # Its gradient pushes the farther instance's prediction up and the nearer one's down.
    pred = torch.zeros(2, requires_grad=True)
    ranking_loss(pred, torch.log(torch.tensor([1.0, 2.0])), torch.zeros(2, dtype=torch.long)).backward()
    assert pred.grad[0] > 0 > pred.grad[1]


def test_window_jitter_moves_the_xray_and_the_rendering_alike():
    rng = np.random.default_rng(0)
    x = torch.zeros(6, 2, 32, 32)
    r = torch.zeros(6, 2, 32, 32)
    x[..., 12, 20] = 5.0  # the same feature in both, away from the centre
    r[..., 12, 20] = 1.0
    x += 0.1  # a background, which the X-ray's edge repeats where the window leaves the cut
    xo, ro = jitter(x, r, rng, 4)
    moved = 0
    for b in range(6):
        for v in range(2):
            ix = np.unravel_index(int(xo[b, v].argmax()), (32, 32))
            ir = np.unravel_index(int(ro[b, v].argmax()), (32, 32))
            assert ix == ir and abs(ix[0] - 12) <= 4 and abs(ix[1] - 20) <= 4
            moved += ix != (12, 20)
    assert moved > 6 and float(xo.min()) == pytest.approx(0.1) and float(ro.min()) == 0.0
    assert jitter(x, r, rng, 0)[0] is x


def test_grouped_order_draws_chunks_of_one_group():
    groups = np.repeat(np.arange(5), [8, 8, 6, 3, 8])
    rng = np.random.default_rng(1)
    order = grouped_order(groups, rng, draw=4)
    assert len(order) == 8 + 8 + 4 + 0 + 8 == len(grouped_order(groups, np.random.default_rng(2), draw=4))
    assert len(set(order.tolist())) == len(order)  # no sample twice in an epoch
    assert all(len(set(groups[order[k : k + 4]])) == 1 for k in range(0, len(order), 4))
    assert not np.array_equal(order, grouped_order(groups, np.random.default_rng(2), draw=4))


@pytest.fixture(scope="module")
def samples(synth_set):
    return prepare_case(synth_set / "a" / "case_0000", CFG, 6, seed=0)


def test_samples_of_a_case(samples, synth_set):
    case = json.loads((synth_set / "a" / "case_0000" / "case.json").read_text())
    whole = [v for v in case["vertebrae"] if not v["truncated"]]
    n = len(samples["masd"])
    assert n % 6 == 0 and 6 <= n <= 6 * len(whole)
    assert samples["xray"].shape == samples["render"].shape == (n, 2, 32, 32)
    assert np.isfinite(samples["xray"].astype(float)).all() and (samples["render"].astype(float) > 0).any()
    ref = samples["masd"][::6]  # each vertebra's first instance: initialised from its true landmarks
    assert (ref < 1.5).all(), ref
    # The label grows with the perturbation: the farther drawn, the larger the MASD.
    moved = np.arange(n) % 6 != 0
    from scipy.stats import spearmanr

    assert spearmanr(samples["magnitude"][moved] + 3 * samples["jump"][moved], samples["masd"][moved])[0] > 0.5
    again = prepare_case(synth_set / "a" / "case_0000", CFG, 6, seed=0)
    assert np.array_equal(again["masd"], samples["masd"])
    # The groups a ranking compares: each vertebra's 6 instances (in one pair).
    assert np.array_equal(groups_of(samples["magnitude"], samples["level"]), np.arange(n) // 6)


def test_rendering_is_centred_in_its_window(samples):
    """The instance's own rendering is centred in each view's window, as the fit will draw it."""
    r = samples["render"].astype(float)[0]
    rows, cols = np.mgrid[0:32, 0:32]
    for v in range(2):
        w = r[v] / r[v].sum()
        assert np.hypot((w * cols).sum() - 15.5, (w * rows).sum() - 15.5) < 3.0


@pytest.fixture(scope="module")
def tiny_weights(synth_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    shutil.copytree(synth_set / "a", root / "data")
    from SpineDARTLib.cli import main

    base = ["train-similarity", "--data", str(root / "data"), "--size", "tiny", "--epochs", "2", "--batch-size", "4",
            "--threads", "1", "--per-vertebra", "4"]  # fmt: skip
    assert main([*base, "--out", str(root / "a.safetensors")]) == 0
    return root, base


def test_tiny_training_resumes_to_the_same_weights(tiny_weights, run_cli):
    root, base = tiny_weights
    card = json.loads((root / "a.json").read_text())
    assert card["schema"] == "spinedart.similarity-card/1" and card["epochs"] == 2 and len(card["history"]) == 2
    assert card["n_train_samples"] > 0 and [r["seed"] for r in card["data"]["runs"]] == [3]
    # Interrupted after the first epoch (its checkpoint written), then resumed: the same weights.
    rc, out, err = run_cli(*base, "--out", root / "b.safetensors", "--stop-after-steps", str(card["steps"] // 2))
    assert rc == 0 and "continue with --resume" in out and not (root / "b.safetensors").exists()
    rc, _, err = run_cli(*base, "--out", root / "b.safetensors")
    assert rc == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(*base, "--out", root / "b.safetensors", "--resume")
    assert rc == 0, err
    wa, _ = load_similarity(root / "a.safetensors")
    wb, card_b = load_similarity(root / "b.safetensors")
    for (ka, va), (kb, vb) in zip(wa.state_dict().items(), wb.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    assert card_b["history"] == card["history"]
    raw = bytearray((root / "a.safetensors").read_bytes())
    (root / "t.safetensors").write_bytes(bytes(raw[:-1]) + bytes([raw[-1] ^ 1]))
    shutil.copy(root / "a.json", root / "t.json")
    with pytest.raises(UserError, match="do not match"):
        load_similarity(root / "t.safetensors")


def test_trajectory_samples_and_fine_tuning(tiny_weights, synth_set):
    """--trajectories adds the iterates of real fits (gt-noisy evidence) as samples, --ray-samples
    instances moved along one view's ray, each in a cache of their own; --init-weights starts from
    given weights and the card names them."""
    from SpineDARTLib.nets.similarity_data import TRAJECTORY_SAMPLES, cache_folder
    from SpineDARTLib.provenance import sha256_file

    traced = prepare_case(synth_set / "a" / "case_0000", CFG, 6, seed=0, trajectories=1)
    n = len(traced["masd"])
    assert 2 <= n <= TRAJECTORY_SAMPLES and (traced["magnitude"] == -1).all()  # one pair, one traced fit
    assert (groups_of(traced["magnitude"], traced["level"]) == 0).all()  # one fit's iterates: one group
    assert np.isfinite(traced["masd"]).all() and np.ptp(traced["masd"]) > 0  # the fit moved the instance
    rays = prepare_case(synth_set / "a" / "case_0000", CFG, 6, seed=0, ray_samples=2)
    groups = groups_of(rays["magnitude"], rays["level"])
    assert len(rays["masd"]) % 3 == 0 and np.array_equal(groups, np.arange(len(groups)) // 3)  # reference + 2
    ref, moved = rays["masd"][::3], rays["masd"].reshape(-1, 3)[:, 1:]
    assert (moved > ref[:, None]).all() and (moved < 12).all(), rays["masd"]
    root, base = tiny_weights
    from SpineDARTLib.cli import main

    args = list(base)
    args[args.index("--epochs") + 1] = "1"
    out = root / "tuned.safetensors"
    init = ["--init-weights", str(root / "a.safetensors")]
    assert main([*args, "--out", str(out), "--trajectories", "1", "--ray-samples", "2", *init]) == 0
    card, first = json.loads(out.with_suffix(".json").read_text()), json.loads((root / "a.json").read_text())
    assert card["traced_fits_per_pair"] == 1 and card["init_weights"]["sha256"] == sha256_file(root / "a.safetensors")
    assert card["ray_samples_per_pair"] == 2 and card["n_train_samples"] > first["n_train_samples"]
    assert any(cache_folder(root / "data", CFG, 4, 0, 1).glob("*.npz"))
    assert any(cache_folder(root / "data", CFG, 4, 0, ray_samples=2).glob("*.npz"))


def test_training_with_the_ranking_term(tiny_weights, run_cli):
    """--rank-weight trains on batches of one vertebra's instances with the ranking term (here with
    moved windows too); the card says so (the tiny set has no validation case: the within-vertebra
    ρ is tested in rank_metrics)."""
    root, base = tiny_weights
    from SpineDARTLib.cli import main

    args = list(base)
    args[args.index("--epochs") + 1] = "1"
    out = root / "ranked.safetensors"
    assert main([*args, "--out", str(out), "--rank-weight", "1", "--window-jitter", "2"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["rank_weight"] == 1.0 and card["rank"]["draw"] == 4 and card["window_jitter"] == 2
    assert card["n_train_samples"] % 4 == 0 and np.isfinite(card["history"][-1]["train_loss"])
    # Its checkpoint does not resume as a run without the ranking term (other batches, other loss).
    rc, _, err = run_cli(*args, "--out", out, "--resume")
    assert rc == 2 and "another configuration" in err.strip().splitlines()[-1], err


def test_fit_trace_holds_every_iterate_from_the_initialisation(synth_set):
    from SpineDARTLib.bench.accuracy import load_views, model_for
    from SpineDARTLib.bench.sets import tasks_of
    from SpineDARTLib.fit import VertebraEvidence, initialise
    from SpineDARTLib.fit.optimise import FitConfig, FitTarget, FitView, Stage, fit

    task = tasks_of(synth_set / "a" / "case_0000", "ort")[0]
    _, xrays, labels, _ = load_views(task)
    model = model_for(task.target)
    evidence = [VertebraEvidence({n: np.asarray(r["uv"]) for n, r in next(
        i for i in lab["instances"] if i["level"] == task.target)["landmarks"].items()}) for lab in labels]  # fmt: skip
    init = initialise(model, task.target, [x.projection for x in xrays], evidence)
    trace: list = []
    cfg = FitConfig(stages=(Stage(64, 3.0, 3, 5),), restarts=2, restart_iterations=3)
    res = fit([FitTarget(task.target, model, init, evidence, [None, None])], [FitView(x.projection, x.image)
              for x in xrays], cfg, trace=trace)[0]  # fmt: skip
    assert [t[0] for t in trace][:3] == ["restart0"] * 3 and trace[-1][0] == "stage0"
    assert len(trace) == res.iterations and np.allclose(trace[0][2][0]["t"], init.translation)
    assert any(np.allclose(st[0]["t"], res.translation) for _, _, st in trace)  # the fit ends on an iterate


def test_prediction_is_differentiable_with_respect_to_the_rendering(tiny_weights):
    net, _ = load_similarity(tiny_weights[0] / "a.safetensors")
    x = torch.randn(1, 2, 32, 32)
    r = torch.randn(1, 2, 32, 32, requires_grad=True)
    y = net.masd(x, r)
    y.sum().backward()
    assert y.shape == (1,) and float(y.detach()) > 0 and r.grad is not None and r.grad.abs().sum() > 0


def test_fit_with_the_learned_term(tiny_weights, synth_set):
    """Every loss option runs the fit; the learned term is in the objective only where asked for."""
    from SpineDARTLib.bench.accuracy import load_views, model_for
    from SpineDARTLib.bench.sets import tasks_of
    from SpineDARTLib.fit import VertebraEvidence, initialise
    from SpineDARTLib.fit.optimise import FitConfig, FitTarget, FitView, Stage, fit

    task = tasks_of(synth_set / "a" / "case_0000", "ort")[0]
    _, xrays, labels, _ = load_views(task)
    model = model_for(task.target)
    evidence = []
    for lab in labels:
        inst = next(i for i in lab["instances"] if i["level"] == task.target)
        evidence.append(VertebraEvidence({n: np.asarray(r["uv"]) for n, r in inst["landmarks"].items()}))
    init = initialise(model, task.target, [x.projection for x in xrays], evidence)
    views = [FitView(x.projection, x.image) for x in xrays]
    weights = str(tiny_weights[0] / "a.safetensors")
    seen = {}
    for loss in ("learned", "mask", "combined"):
        cfg = FitConfig(stages=(Stage(64, 3.0, 3, 4),), restarts=1, loss=loss, similarity=weights)
        res = fit([FitTarget(task.target, model, init, evidence, [None, None])], views, cfg)[0]
        seen[loss] = set().union(*(h.keys() for h in res.history))
        assert np.isfinite(res.translation).all()
    assert "learned" in seen["learned"] and "image" not in seen["learned"]
    assert "learned" not in seen["mask"] and "image" not in seen["mask"]
    assert {"learned", "image", "mask"} <= seen["combined"]
    with pytest.raises(UserError, match="similarity weights are missing"):
        fit([FitTarget(task.target, model, init, evidence, [None, None])], views,
            FitConfig(loss="learned", similarity=str(tiny_weights[0] / "none.safetensors")))  # fmt: skip


def test_loss_names():
    assert loss_terms("combined") == ("analytic", "mask", "learned")
    assert loss_terms("mask+learned") == ("mask", "learned")
    assert bench_method_loss("fit:learned") == ("fit", "learned") and bench_method_loss("ncc") == ("ncc", None)
    for bad in ("mi", "mask+mask", ""):
        with pytest.raises(UserError, match="unknown fit loss"):
            loss_terms(bad)
    with pytest.raises(UserError, match="--method"):
        bench_method_loss("fitt")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--epochs", "0"], "positive"),
        (["--out", "w.pt"], ".safetensors"),
        (["--workers", "0"], "--workers"),
        (["--rank-weight", "-1"], "--rank-weight"),
        (["--rank-weight", "nan"], "--rank-weight"),
        (["--window-jitter", "-1"], "--window-jitter"),
        (["--window-jitter", "64"], "--window-jitter"),  # half the default 128-pixel window
        (["--ray-samples", "-1"], "--ray-samples"),
    ],
)
def test_train_similarity_bad_input(tmp_path, run_cli, args, match):
    rc, _, err = run_cli("train-similarity", "--data", tmp_path, "--out", tmp_path / "w.safetensors", *args)
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("train-similarity", "--data", tmp_path, "--out", tmp_path / "w.safetensors")
    assert rc == 2 and "no data-engine case" in err and len(err.strip().splitlines()) == 1


def test_plan_and_bench_refuse_an_unknown_loss(run_cli, tmp_path):
    rc, _, err = run_cli("bench", "--set", "synthetic-ort", "--method", "fit:mi", "--out", tmp_path / "o")
    assert rc == 2 and "unknown fit loss" in err and len(err.strip().splitlines()) == 1
    x = tmp_path / "a.tif"
    x.write_bytes(b"")
    rc, _, err = run_cli("plan", "--xray", x, "--xray", x, "--loss", "ncc+mask", "--out", tmp_path / "p")
    assert rc == 2 and "unknown fit loss" in err and len(err.strip().splitlines()) == 1


def _distance(model, ref, p, ref_pts) -> float:
    """Mean surface-point distance (mm) of the instance with pose ``p`` from the reference's."""
    pts = model.surface(model.instance(ref["b"], p["r"].detach().numpy(), p["t"].detach().numpy()))
    return float(np.linalg.norm(pts - ref_pts, axis=1).mean())


@pytest.fixture(scope="module")
def demo_views():
    """The demo case's two X-rays and its truth (a scene no network was trained on)."""
    from SpineDARTLib.resources import demo_case_dir
    from SpineDARTLib.xray import read_xray

    demo = demo_case_dir()
    return [read_xray(demo / f"xray_{k}.png", demo / f"xray_{k}.json") for k in "ab"], json.loads(
        (demo / "truth.json").read_text()
    )


def _demo_level(demo_views, level: str):
    """(shape model, the instance initialised from the true landmarks, the shipped learned term) of
    a demo level."""
    from SpineDARTLib.fit.learned import LearnedTerm, default_weights
    from SpineDARTLib.ssm.io import model_for_level

    xr, truth = demo_views
    model = model_for_level(level)
    ref = reference_instance(model, level, [x.projection for x in xr], truth["vertebrae"][level]["landmarks"])
    term = LearnedTerm([model], [x.image for x in xr], [x.projection for x in xr], default_weights(), "cpu")
    return model, ref, term


def test_shipped_similarity_descends_towards_the_truth_on_the_demo_case(demo_views):
    """Issue 12 §3: on the demo case (a scene no network was trained on), instances started 5 mm
    and 5° off the one initialised from the true landmarks are moved back towards it by descending
    the shipped network's predicted MASD alone (its gradient through the rendering and the window).
    Measured (BENCHMARKS, "differentiate the window"): 11 of these 12 starts improve, median
    distance 5.2 → 4.0 mm; the thresholds leave room for that, not for a descent in no direction."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(5)
    before, after = [], []
    for level in ("L1", "L2", "L3"):
        model, ref, term = _demo_level(demo_views, level)
        ref_pts = model.surface(model.instance(ref["b"], ref["r"], ref["t"]))
        for _ in range(4):
            d, axis = rng.normal(size=3), rng.normal(size=3)
            rot = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(5.0)) * Rotation.from_rotvec(ref["r"])
            p = {"b": torch.tensor(ref["b"], dtype=torch.float32),
                 "r": torch.tensor(rot.as_rotvec(), dtype=torch.float32, requires_grad=True),
                 "t": torch.tensor(ref["t"] + 5.0 * d / np.linalg.norm(d), dtype=torch.float32,
                                   requires_grad=True)}  # fmt: skip
            opt = torch.optim.Adam([{"params": [p["t"]], "lr": 0.5}, {"params": [p["r"]], "lr": 0.01}])

            before.append(_distance(model, ref, p, ref_pts))
            for _ in range(30):
                opt.zero_grad()
                term([p]).backward()
                opt.step()
            after.append(_distance(model, ref, p, ref_pts))
    before, after = np.array(before), np.array(after)
    assert (after < before).sum() >= 9 and np.median(after) < 0.85 * np.median(before), (before, after)


def test_learned_gradient_is_the_derivative_of_what_it_predicts(demo_views):
    """The learned term's gradient w.r.t. translation matches finite differences of the term itself
    (whose window follows the instance). Before the window was differentiated, the gradient saw
    only the rendering move in a fixed window — a function the network never learned (its
    instances are always centred) — and here pointed away from the truth along z (cosine < 0)."""
    _, ref, term = _demo_level(demo_views, "L2")
    p = {k: torch.tensor(np.asarray(ref[k], np.float32)) for k in "brt"}
    p["t"] = (p["t"] + torch.tensor([3.0, -2.0, 1.0])).requires_grad_(True)
    term([p]).backward()
    fd = []
    for i in range(3):
        values = []
        for sign in (1.0, -1.0):
            q = {k: v.detach().clone() for k, v in p.items()}
            q["t"][i] += sign * 0.2
            with torch.no_grad():
                values.append(float(term([q])))
        fd.append((values[0] - values[1]) / 0.4)
    g, fd = p["t"].grad.numpy(), np.array(fd)
    assert g @ fd / (np.linalg.norm(g) * np.linalg.norm(fd)) > 0.9, (g, fd)


def test_bench_reruns_learned_records_of_other_weights(tmp_path, run_cli, tiny_weights):
    """``bench --method fit:learned`` records the similarity weights it used; a resumed run keeps
    them while the weights are the same and refits them when they are not."""
    args = ["bench", "--set", "synthetic-ort", "--n", "1", "--seed", "1000000", "--method", "fit:learned",
            "--work", tmp_path / "w", "--out", tmp_path / "o"]  # fmt: skip
    rc, _, err = run_cli(*args)
    assert rc == 0, err
    rec_path = tmp_path / "o" / "records.jsonl"
    rec = json.loads(rec_path.read_text().splitlines()[-1])
    from SpineDARTLib.fit.learned import load_network

    assert rec["method"] == "fit:learned" and rec["similarity_sha"] == load_network(None)[1]["weights_sha256"]
    assert "predicted_masd_mm" in rec["checks"]
    rc, _, err = run_cli(*args)
    assert rc == 0 and "1/1" not in err  # nothing refitted
    # Other weights named with --similarity: refitted with them, and recorded as such. (A record of
    # other weights than the current ones is refitted whichever weights those are: one case of it
    # suffices, and the tiny network's fit is the cheap one.)
    tiny = tiny_weights[0] / "a.safetensors"
    rc, _, err = run_cli(*args, "--similarity", tiny)
    assert rc == 0 and "1/1" in err, err
    rec = json.loads(rec_path.read_text().splitlines()[-1])
    assert rec["similarity_sha"] == json.loads(tiny.with_suffix(".json").read_text())["weights_sha256"]
    rc, _, err = run_cli(*args, "--similarity", tmp_path / "none.safetensors")
    assert rc == 2 and "none.safetensors" in err and len(err.strip().splitlines()) == 1
