"""The fit, its metrics, the gt-noisy evidence and ``spinedart bench`` (one synthetic scene, end to end)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from SpineDARTLib.errors import UserError

SEED = 1_000_000


# --- metrics --------------------------------------------------------------------------------------
def _sphere(radius: float, centre=(0.0, 0.0, 0.0)):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    return np.asarray(m.vertices) + np.asarray(centre), np.asarray(m.faces)


def test_mesh_dice_matches_the_analytic_overlap_of_two_spheres():
    from SpineDARTLib.metrics import mesh_dice

    r, d = 10.0, 4.0
    a, b = _sphere(r), _sphere(r, (d, 0.0, 0.0))
    # Two equal spheres a distance d apart: lens volume π(4r + d)(2r − d)² / 12.
    lens = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    expected = lens / (4 / 3 * np.pi * r**3)
    assert mesh_dice(a, a) == pytest.approx(1.0)
    assert mesh_dice(a, b) == pytest.approx(expected, abs=0.01)
    # A run-away fit: disjoint boxes give 0 at once; a huge union grid is counted by parts, the same.
    assert mesh_dice(a, _sphere(r, (500.0, 0.0, 0.0))) == 0.0
    from SpineDARTLib.metrics import _dice_by_parts

    assert _dice_by_parts(a, b, 0.5) == pytest.approx(mesh_dice(a, b), abs=1e-3)


def test_gt_ceiling_of_a_voxel_ball_is_high_but_below_one():
    from SpineDARTLib.metrics import gt_ceiling_dice

    ijk = np.stack(np.meshgrid(*[np.arange(30)] * 3, indexing="ij"), -1)
    mask = np.linalg.norm(ijk - 14.5, axis=-1) < 10
    affine = np.diag([1.0, 1.0, 2.0, 1.0])  # anisotropic voxels, as CTs have
    c = gt_ceiling_dice(mask, affine)
    assert 0.85 < c < 0.999


def test_trajectory_errors():
    from SpineDARTLib.metrics import trajectory_errors

    gt = {s: {"entry": [0, 0, 0], "target": [0, 40, 0]} for s in ("left", "right")}
    pred = {
        "left": {"entry": [3, 0, 4], "target": [3, 40, 4]},  # 5 mm off, parallel
        "right": {"entry": [0, 0, 0], "target": [40, 40, 0]},  # same entry, 45° off, target 40 mm off
    }
    e = trajectory_errors(pred, gt)
    assert e["entry_err_mm"] == pytest.approx(2.5)
    assert e["target_err_mm"] == pytest.approx(22.5)
    assert e["angle_err_deg"] == pytest.approx(22.5)


# --- gt-noisy evidence ------------------------------------------------------------------------------
def test_degraded_mask_moves_the_boundary_by_the_protocol_amount():
    from scipy.ndimage import distance_transform_edt

    from SpineDARTLib.fit.evidence import degrade_mask

    px = 0.5
    yy, xx = np.mgrid[:400, :400]
    mask = (xx - 200) ** 2 / 90**2 + (yy - 200) ** 2 / 60**2 < 1
    shifts = []
    for s in range(6):
        d = degrade_mask(mask, px, np.random.default_rng(s))
        # Distance of each new boundary pixel to the old boundary: the displacement, in mm.
        edge = d & ~np.roll(d, 1, 0) | d & ~np.roll(d, 1, 1)
        dist = np.where(mask, distance_transform_edt(mask), distance_transform_edt(~mask)) - 0.5
        shifts.append(dist[edge] * px)
    rms = float(np.sqrt(np.mean(np.concatenate(shifts) ** 2)))
    assert 1.1 < rms < 2.0, rms  # 1.5 mm RMS, measured on a pixel grid
    again = [degrade_mask(mask, px, np.random.default_rng(1)) for _ in range(2)]
    assert np.array_equal(*again)


def test_gt_noisy_landmarks_follow_the_protocol():
    from SpineDARTLib.fit.evidence import gt_noisy_view

    names = ["BC", "SEC", "IEC", "LPI", "RPI", "SPT", "LTP", "RTP", "AMP", "PMP"]
    n_inst = 300
    labels = {
        "instances": [
            {
                "level": f"X{i}",
                "mask_index": i,
                "landmarks": {n: {"uv": [100.0, 100.0], "in_fov": True} for n in names},
            }
            for i in range(n_inst)
        ]
    }
    masks = np.zeros((n_inst, 64, 64), bool)
    masks[:, 20:40, 20:40] = True
    view = gt_noisy_view(labels, masks, 0.5, np.random.default_rng(3))
    uv = np.array([p for ev in view.evidence.values() for p in ev.landmarks.values()])
    kept = len(uv) / (n_inst * len(names))
    assert kept == pytest.approx(0.8, abs=0.02)
    assert np.std(uv - 100.0) == pytest.approx(2.0 / 0.5, rel=0.05)  # σ 2 mm at 0.5 mm pixels
    missing = sum(m is None for m in view.masks.values()) / n_inst
    assert missing == pytest.approx(0.1, abs=0.04)
    assert all(ev.centroid is not None for ev in view.evidence.values())


# --- end to end: spinedart bench on one synthetic scene ---------------------------------------------
@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One scene (protocol views, both kinds), fitted by the product and by the NCC baseline."""
    from SpineDARTLib.cli import main

    root = tmp_path_factory.mktemp("bench")
    args = ["bench", "--set", "synthetic-ort", "--n", "1", "--seed", str(SEED)]
    args += ["--work", str(root / "work"), "--out", str(root / "out"), "--json"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    return rc, buf.getvalue(), root, args


def test_bench_fits_a_scene_and_reports_the_protocol_json(bench_run):
    rc, out, root, _ = bench_run
    assert rc == 0, out
    s = json.loads(out.strip().splitlines()[-1])
    for key in (
        "protocol", "set", "init", "seed", "dice_grid_mm", "n_vertebrae", "n_failed", "n_skipped", "skipped",
        "dice_mean", "dice_mean_accepted", "gt_ceiling_dice", "nsd1_mean", "nsd2_mean", "hd95_mean", "assd_mean",
        "entry_err_mm", "target_err_mm", "angle_err_deg", "completion_rate", "bipedicular_ab_rate",
        "false_safe_rate", "sec_per_vertebra", "device", "per_level",
    ):  # fmt: skip
        assert key in s, key
    assert s["protocol"] == "p1" and s["set"] == "synthetic-ort" and s["init"] == "gt-noisy"
    assert s["n_vertebrae"] == 1 and s["dice_grid_mm"] == 0.5
    rec = [json.loads(line) for line in (root / "out" / "records.jsonl").read_text().splitlines()]
    fit = next(r for r in rec if r["method"] == "fit")
    ncc = next(r for r in rec if r["method"] == "ncc")
    # The fit converges, is accurate, and improves on its landmark initialisation.
    assert fit["converged"], fit["reason"]
    assert fit["dice"] > 0.9 and fit["assd"] < 1.0 and fit["hd95"] < 3.0
    assert fit["dice"] > fit["init_scores"]["dice"] + 0.01
    assert len(fit["fitted_levels"]) >= 2  # neighbours fitted with the target
    assert s["dice_mean"] == pytest.approx(fit["dice"])
    assert "baseline_ncc" in s and s["baseline_ncc"]["n_vertebrae"] == 1
    assert ncc["dice"] < fit["dice"]  # NCC on a whole-scene radiograph: the paper's baseline loses
    # The planner ran on the fit and each cannula was graded against the true vertebra.
    plan = fit["plan"]
    assert plan["status"] in ("go", "no-go") and [c["side"] for c in plan["cannulas"]] == ["left", "right"]
    for c in plan["cannulas"]:
        assert c["true"]["grade"] in "ABCDE" and c["predicted"]["grade"] in "ABCDE"
    assert s["bipedicular_ab_rate"] == float(plan["bipedicular_ab"])
    n_safe = sum(c["safe"] for c in plan["cannulas"])
    assert s["n_flagged_safe"] == n_safe and (s["false_safe_rate"] is None) == (n_safe == 0)
    assert (root / "out" / "boxplot_dice.png").stat().st_size > 1000
    assert (root / "out" / "summary.json").is_file()


def test_bench_resumes_without_refitting(bench_run):
    from SpineDARTLib.cli import main

    _, out, root, args = bench_run
    before = (root / "out" / "records.jsonl").read_text()
    assert main(args) == 0
    assert (root / "out" / "records.jsonl").read_text() == before
    assert json.loads((root / "out" / "summary.json").read_text())["dice_mean"] == pytest.approx(
        json.loads(out.strip().splitlines()[-1])["dice_mean"]
    )


def _task(root):
    from SpineDARTLib.bench.sets import tasks_of

    case = next((root / "work").glob("healthy-*"))
    return tasks_of(case, "ort")[0]


def test_fit_verdict_flags_contradictory_evidence(bench_run):
    """Landmarks moved 25 mm in one view only cannot be met in both views: the fit is reported
    as failed, with the reason, instead of being exported as a plan."""
    from SpineDARTLib.bench.accuracy import load_views, model_for
    from SpineDARTLib.fit import VertebraEvidence, initialise
    from SpineDARTLib.fit.optimise import FitConfig, FitTarget, FitView, Stage, fit

    task = _task(bench_run[2])
    _, xrays, labels, _ = load_views(task)
    level = task.target
    model = model_for(level)
    evidence = []
    for lab in labels:
        inst = next(i for i in lab["instances"] if i["level"] == level)
        evidence.append(VertebraEvidence({n: np.asarray(r["uv"]) for n, r in inst["landmarks"].items()}))
    init = initialise(model, level, [x.projection for x in xrays], evidence)
    shifted = VertebraEvidence({n: uv + np.array([0.0, 25.0 / 0.586]) for n, uv in evidence[1].landmarks.items()})
    cfg = FitConfig(stages=(Stage(128, 3.0, 5, 20),), restarts=1)
    views = [FitView(x.projection, x.image) for x in xrays]
    good = fit([FitTarget(level, model, init, evidence, [None, None])], views, cfg)[0]
    bad = fit([FitTarget(level, model, init, [evidence[0], shifted], [None, None])], views, cfg)[0]
    assert good.converged, good.reason
    assert not bad.converged and "landmark reprojection" in bad.reason
    blind = fit([FitTarget(level, model, init, [VertebraEvidence()] * 2, [None, None])], views, cfg)[0]
    assert not blind.converged and "no landmarks or instance masks" in blind.reason


def test_fit_settings_and_inputs_are_checked():
    from SpineDARTLib.fit.optimise import FitConfig, fit

    with pytest.raises(UserError, match="unknown fit method"):
        FitConfig(method="mi")
    with pytest.raises(UserError, match="out of range"):
        FitConfig(w_mask=-1.0)
    with pytest.raises(UserError, match="two X-rays"):
        fit([], [])


def test_benchmark_seeds_never_overlap_a_shape_models_seeds():
    from SpineDARTLib.bench.sets import check_models_disjoint

    check_models_disjoint(range(SEED, SEED + 100), ["L3", "T5"])
    with pytest.raises(UserError, match="overlap the L1-L5 model"):
        check_models_disjoint(range(400_050, 400_060), ["L3"])


@pytest.mark.parametrize(
    "args, match",
    [
        (["bench"], "no set given"),
        (["bench", "--set", "synthetic-ort", "--seed", "5"], "reserved range"),
        (["bench", "--set", "synthetic-ort", "--init", "auto", "--detector", "none.safetensors"], "not found"),
        (["bench", "--set", "synthetic-ort", "--method", "mi"], "--method"),
        (["bench", "--set", "synthetic-ort", "--method", "fit,fit"], "--method"),
        (["bench", "--set", "synthetic-ort", "--method", "fit,geoplan", "--detector", "none.safetensors"], "not found"),
        (["bench", "--set", "synthetic-ort", "--n", "0"], "--n 0"),
        (["bench", "--set", "real-ct", "--case-labels", "x.nii.gz"], "two different inputs"),
        (["bench", "--case-ct", "ct.nii.gz"], "needs --case-labels"),
        (["bench", "--case-labels", "missing.nii.gz", "--hu-from-labels"], "file not found"),
        (["bench", "--case-labels", "x.nii.gz"], "no CT given"),
        (["bench", "--set", "nope"], "invalid choice"),
        (["bench", "--set", "synthetic-ort", "--perturb-geometry", "2,10"], "--perturb-geometry"),
        (["bench", "--set", "synthetic-ort", "--init", "auto,auto"], "--init"),
        (["bench", "--set", "synthetic-ort", "--init", "gt-noisy,auto", "--detector", "none.safetensors"], "not found"),
        (["bench", "--set", "synthetic-ort", "--perturb-geometry", "2,-1,5"], "out of range"),
        (["bench", "--set", "synthetic-random", "--pairs", "ort"], "--pairs"),
    ],
)
def test_bench_bad_input_gets_one_line(run_cli, tmp_path, args, match):
    rc, out, err = run_cli(*args, "--work", tmp_path / "w", "--out", tmp_path / "o")
    assert rc == 2
    assert match in err and len(err.strip().splitlines()) == 1, err


def test_surface_distances_of_a_far_mesh_stay_exact_and_bounded():
    """A run-away fit leaves its mesh far from the truth: distances stay exact (and are computed in
    chunks, so memory does not grow with the distance)."""
    from SpineDARTLib.surface import distance_to_mesh

    v, f = _sphere(10.0)
    pts = np.array([[500.0, 0.0, 0.0], [0.0, -300.0, 0.0]] * 1500)
    d = distance_to_mesh(pts, v, f)
    assert d.shape == (3000,)
    assert np.allclose(d[::2], 490.0, atol=0.05) and np.allclose(d[1::2], 290.0, atol=0.05)


@pytest.fixture
def one_torch_thread():
    """Fits as a dask worker runs them (one torch thread): parallel sums in another order would
    move a fit's last digits, and its Dice by ~1e-4."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_bench_on_a_users_label_map(small_maps, synth_set, tmp_path, run_cli, one_torch_thread):
    """``--case-labels`` with synthetic HU: only the first complete vertebra is rendered and fitted
    (--n 1), cut vertebrae are listed as skipped, and the GT ceiling is stated. Then the same run on
    dask workers, and a unit that fails there."""
    args = ["bench", "--case-labels", small_maps["ts2"], "--hu-from-labels", "--n", "1", "--method", "fit"]
    args += ["--seed", str(SEED), "--work", tmp_path / "w", "--out", tmp_path / "o", "--json"]
    rc, out, err = run_cli(*args)
    assert rc == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["set"] == "case" and "baseline_ncc" not in s
    assert {k["level"] for k in s["skipped"]} >= {"T9", "L1"}
    assert all("border" in k["reason"] or "volume" in k["reason"] for k in s["skipped"])
    assert list(s["per_level"]) == ["T10"]
    assert s["by_pairs"]["ort"]["n_vertebrae"] == 1 and s["by_pairs"]["random"]["n_vertebrae"] >= 1
    assert 0.9 < s["gt_ceiling_dice"] <= 1.0 and s["per_level"]["T10"]["gt_ceiling_dice"] == s["gt_ceiling_dice"]
    recs = [json.loads(line) for line in (tmp_path / "o" / "records.jsonl").read_text().splitlines()]
    assert len(recs) == s["n_vertebrae"] and all(r["level"] == "T10" and r["method"] == "fit" for r in recs)
    # The fit recovers the real vertebra's shape from its synthetic-HU radiographs.
    assert s["dice_mean"] > 0.6, s
    dice_oracle = s["dice_mean"]
    (case,) = (tmp_path / "w").iterdir()
    assert {v["target"] for v in json.loads((case / "case.json").read_text())["views"]} == {"T10"}
    # The same run on a local dask cluster (2 worker processes, loopback only): the same records, to
    # the last digit (the orthogonal pair's fit: one says it as well as four, and is one fit instead of four).
    dask_args = [a if a != tmp_path / "o" else tmp_path / "o-dask" for a in args] + ["--workers", "2", "--pairs", "ort"]
    rc, out, err = run_cli(*dask_args)
    assert rc == 0, err
    lines = (tmp_path / "o-dask" / "records.jsonl").read_text().splitlines()
    recs_dask = {r["task"]: r for r in map(json.loads, lines)}
    assert sorted(recs_dask) == sorted(r["task"] for r in recs if r["pairs"] == "ort") and recs_dask
    for r in [r for r in recs if r["pairs"] == "ort"]:
        d = recs_dask[r["task"]]
        assert (d["converged"], d["reason"]) == (r["converged"], r["reason"])
        for k in ("dice", "assd", "entry_err_mm", "angle_err_deg", "iterations"):
            assert d[k] == r[k], k
    # A folder of cases: the same label map (its case and records are reused: nothing is refitted), one
    # of another convention and an empty one, both listed as skipped with their reason.
    folder = tmp_path / "cases"
    folder.mkdir()
    for name in ("ts2", "ts1", "empty"):
        shutil.copy(small_maps[name], folder / f"{name}.nii.gz")
    dir_args = [a if a != small_maps["ts2"] else folder for a in args]
    rc, out, err = run_cli(*dir_args)
    assert rc == 0 and " fit: Dice" not in err, err
    d = json.loads(out.strip().splitlines()[-1])
    assert list(d["per_case"]) == ["ts2"] and d["per_case"]["ts2"]["n_vertebrae"] == s["n_vertebrae"]
    assert d["per_case"]["ts2"]["dice_mean"] == s["dice_mean"] and "T10" in d["per_case"]["ts2"]["per_level"]
    whole = {k["case"]: k["reason"] for k in d["skipped"] if k["level"] is None}
    assert sorted(whole) == ["empty", "ts1"] and "v1" in whole["ts1"], whole
    assert "skipped case ts1" in out
    # --pairs ort: the orthogonal pair's fit only (its record reused, nothing refitted).
    rc, out, err = run_cli(*args, "--pairs", "ort")
    assert rc == 0 and " fit: Dice" not in err, err
    o = json.loads(out.strip().splitlines()[-1])
    assert o["pairs"] == "ort" and s["pairs"] == "both" and o["n_vertebrae"] == 1 < s["n_vertebrae"]
    assert o["by_pairs"]["random"]["n_vertebrae"] == 0 and o["dice_mean"] == s["by_pairs"]["ort"]["dice_mean"]
    # The calibration-robustness study: the fit is handed geometries wrong by 2 deg, 10 mm, 5 mm (the
    # same images): its records say so, the geometry each view got is recorded, and the scores move.
    # (The orthogonal pair only: one fit says it as well as four.)
    wrong_args = [a if a != tmp_path / "o" else tmp_path / "o-wrong" for a in args]
    rc, out, err = run_cli(*wrong_args, "--perturb-geometry", "2,10,5", "--pairs", "ort")
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])["miscalibration"] == [2.0, 10.0, 5.0]
    wrong = {r["task"]: r for r in map(json.loads, (tmp_path / "o-wrong" / "records.jsonl").read_text().splitlines())}
    assert sorted(wrong) == [r["task"] for r in recs if r["pairs"] == "ort"]
    for r in [r for r in recs if r["pairs"] == "ort"]:
        w = wrong[r["task"]]
        assert w["miscalibration"] == [2.0, 10.0, 5.0] and len(w["miscalibrated"]) == 2
        assert all(v["angle_deg"] == 2.0 and abs(v["distance_mm"]) == 10.0 for v in w["miscalibrated"])
        assert w["dice"] != r["dice"] and w["entry_err_mm"] != r["entry_err_mm"]
    # A unit that fails on a worker (its view file gone) is a failed record marked as an error and
    # the rest of the run goes on; the next resume runs it again.
    view = sorted((case / "views").glob("*.tif"))[0]
    moved = view.with_suffix(".bak")
    view.rename(moved)
    err_args = [a if a != tmp_path / "o" else tmp_path / "o-err" for a in args] + ["--workers", "2"]
    rc, out, err = run_cli(*err_args)
    assert rc == 0, err
    errs = [json.loads(x) for x in (tmp_path / "o-err" / "records.jsonl").read_text().splitlines()]
    bad = [r for r in errs if r.get("error")]
    assert bad and all(r["reason"].startswith("error: ") and "file not found" in r["reason"] for r in bad), bad
    assert len(errs) == len(recs) and any(not r.get("error") for r in errs)
    moved.rename(view)
    rc, out, err = run_cli(*err_args)
    assert rc == 0 and err.count("spinedart bench: ") == len(bad), err
    # --init auto on the same (cached) case: the evidence comes from the detector. An untrained one
    # finds nothing useful: each fit is reported failed, with the detector's reason or, where two of its
    # random peaks happen to pair across the views, with the verdict's checks (wiring, not accuracy).
    from SpineDARTLib.nets.detector import DetectorConfig
    from SpineDARTLib.nets.detector_train import train_detector

    tiny = DetectorConfig(image_size=64, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4,
                          decoder_dim=16)  # fmt: skip
    shutil.copytree(synth_set / "a", tmp_path / "det-data")  # training caches samples beside the cases
    train_detector(tmp_path / "det-data", tmp_path / "det.safetensors", tiny, epochs=1, batch_size=2, progress=print)
    auto = [a if a != tmp_path / "o" else tmp_path / "o-auto" for a in args]
    rc, out, err = run_cli(*auto, "--init", "auto,gt-noisy", "--detector", tmp_path / "det.safetensors")
    assert rc == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert s["init"] == "auto" and "detector" in s["provenance"]["models"]
    # Both modes on the same fits, side by side; the oracle's numbers are those of the first run.
    assert list(s["by_init"]) == ["auto", "gt-noisy"] and s["by_init"]["auto"]["n_vertebrae"] == len(recs)
    assert s["by_init"]["gt-noisy"]["dice_mean"] == pytest.approx(dice_oracle, abs=1e-12)
    assert "init gt-noisy:" in out
    recs = [json.loads(line) for line in (tmp_path / "o-auto" / "init-auto" / "records.jsonl").read_text().splitlines()]
    assert recs and all(r["init"] == "auto" and "detector" in r for r in recs)
    assert all(
        r["converged"] or r["reason"].startswith("detector: ") or (r.get("checks") and r["reason"]) for r in recs
    )
