"""The annotation network: targets from data-engine cases, a tiny training run (resumable, same
weights), weights and card, decoding geometry, order and level anchors, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from SpineDARTLib.anatomy.landmarks import LANDMARKS
from SpineDARTLib.errors import UserError
from SpineDARTLib.nets.detect import DetectedVertebra, detect, order_and_levels
from SpineDARTLib.nets.detector import HEADS, Detector, DetectorConfig
from SpineDARTLib.nets.detector_data import (
    PATH_POINTS,
    letterbox,
    load_sample,
    prepare,
    random_similarity,
    targets,
    transform_sample,
)
from SpineDARTLib.nets.detector_train import DISPLACEMENT_SCALE, LEVEL_SCALE, load_detector

TINY = DetectorConfig(image_size=64, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8), window_size=4,
                      decoder_dim=16)  # fmt: skip


@pytest.fixture
def cases(synth_set, tmp_path):
    shutil.copytree(synth_set / "a", tmp_path / "data")
    return tmp_path / "data"


def test_samples_and_targets_follow_the_case(cases):
    train, val = prepare(cases, TINY)
    files = train + val
    assert len(files) == 2  # one case, AP and lateral
    case = json.loads((cases / "case_0000" / "case.json").read_text())
    s = load_sample(files[0])
    assert s["image"].shape == (64, 64) and len(s["levels"]) >= 3  # L4 and its neighbours
    assert s["masks"].shape == (len(s["levels"]), 16, 16) and s["masks"].max() == 255
    # The centre is BC, mapped through the letterbox (96² views → 64²: scale 2/3).
    labels = json.loads((cases / "case_0000" / case["views"][0]["labels"]).read_text())
    bc = [i["landmarks"]["BC"]["uv"] for i in labels["instances"] if i["landmarks"]["BC"]["in_fov"]]
    assert np.allclose(s["centres"][0], (np.array(bc[0]) + 0.5) * (64 / 96) - 0.5, atol=1e-4)
    t = targets(s, TINY)
    assert t["centre_hm"].shape == (1, 16, 16) and (t["centre_hm"] == 1).sum() == len(s["levels"])
    assert t["landmark_hm"].shape == (len(LANDMARKS), 16, 16)
    # Each centre's mask covers the centre's cell.
    for (x, y), m in zip(t["cells"], s["masks"], strict=True):
        assert m[y, x] > 0
    # The cannulas' entry and target points, mapped alike; the target vertebra (L4) has both sides.
    l4 = [i for i in labels["instances"] if i["landmarks"]["BC"]["in_fov"]]
    k4 = [i["level"] for i in l4].index("L4")
    entry = l4[k4]["trajectories"]["left"]["entry"]["uv"]
    assert s["paths"].shape == (len(s["levels"]), len(PATH_POINTS), 2) and s["path_visible"][k4].all()
    assert np.allclose(s["paths"][k4, 0], (np.array(entry) + 0.5) * (64 / 96) - 0.5, atol=1e-4)


def test_augmentation_moves_image_points_and_masks_alike(cases):
    train, val = prepare(cases, TINY)
    s = load_sample((train + val)[0])
    ident = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    same = transform_sample(s, ident, TINY)
    assert np.allclose(same["image"], s["image"].astype(np.float32), atol=1e-3)
    assert np.array_equal(same["masks"], s["masks"]) and np.allclose(same["centres"], s["centres"])
    # A shift by whole cells (8 px right = 2 cells, 4 px up = 1 cell) moves image and masks by exactly that.
    shift = np.array([[1.0, 0.0, 8.0], [0.0, 1.0, -4.0]])
    moved = transform_sample(s, shift, TINY)
    kept = np.all((s["centres"] + [8.0, -4.0] >= 0) & (s["centres"] + [8.0, -4.0] <= 63), axis=1)
    assert np.array_equal(moved["masks"][:, 0:15, 2:16], s["masks"][kept][:, 1:16, 0:14])
    assert np.allclose(moved["image"][0:60, 8:64], s["image"][4:64, 0:56].astype(np.float32), atol=1e-3)
    # A quarter turn about the image centre turns image and masks exactly (cell centres included).
    turned = transform_sample(s, np.array([[0.0, -1.0, 63.0], [1.0, 0.0, 0.0]]), TINY)
    assert np.allclose(turned["image"], np.rot90(s["image"].astype(np.float32), k=-1), atol=1e-3)
    assert np.array_equal(turned["masks"], np.rot90(s["masks"], k=-1, axes=(1, 2)))
    # A random similarity: every point moves by it, the image value at a moved centre is the
    # original one there, and each moved centre still lies in its moved mask.
    from scipy.ndimage import map_coordinates

    m = random_similarity(np.random.default_rng(5), 64)
    out = transform_sample(s, m, TINY)
    kept = np.all((s["centres"] @ m[:, :2].T + m[:, 2] >= 0) & (s["centres"] @ m[:, :2].T + m[:, 2] <= 63), axis=1)
    assert np.allclose(out["centres"], s["centres"][kept] @ m[:, :2].T + m[:, 2], atol=1e-5)
    assert np.allclose(out["paths"], s["paths"][kept] @ m[:, :2].T + m[:, 2], atol=1e-4)
    img = s["image"].astype(np.float32)
    before = map_coordinates(img, s["centres"][kept][:, ::-1].T, order=1)
    after = map_coordinates(out["image"], out["centres"][:, ::-1].T, order=1)
    assert np.allclose(before, after, atol=0.05 * (img.max() - img.min()))
    cells = np.clip(np.floor(out["centres"] / 4 + 0.5), 0, 15).astype(int)
    for (x, y), mask in zip(cells, out["masks"], strict=True):
        assert mask[y, x] > 0
    assert float(out["mm_per_px"]) < float(s["mm_per_px"]) * 1.3


def test_tiny_training_resumes_to_the_same_weights(cases, tmp_path, run_cli):
    base = ["--data", cases, "--size", "tiny", "--epochs", "2", "--batch-size", "2", "--threads", "1"]
    rc, out, err = run_cli("train-detector", *base, "--out", tmp_path / "a.safetensors")
    assert rc == 0, err
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["schema"] == "spinedart.detector-card/1" and card["epochs"] == 2 and len(card["history"]) == 2
    assert [r["seed"] for r in card["data"]["runs"]] == [3] and "train-detector" in card["command"]
    # Interrupted after the first epoch, then resumed: the same weights, bit for bit.
    rc, out, err = run_cli("train-detector", *base, "--out", tmp_path / "b.safetensors", "--stop-after-steps", "1")
    assert rc == 0 and "continue with --resume" in out and not (tmp_path / "b.safetensors").exists()
    rc, _, err = run_cli("train-detector", *base, "--out", tmp_path / "b.safetensors")
    assert rc == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    rc, out, err = run_cli("train-detector", *base, "--out", tmp_path / "b.safetensors", "--resume")
    assert rc == 0, err
    wa, _ = load_detector(tmp_path / "a.safetensors")
    wb, card_b = load_detector(tmp_path / "b.safetensors")
    for (ka, va), (kb, vb) in zip(wa.state_dict().items(), wb.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    assert card_b["history"] == card["history"]
    # The network runs on any image without crashing, an empty one included.
    assert isinstance(detect(wa, np.zeros((8, 8), np.float32)), list)
    from SpineDARTLib.bench.detector_eval import evaluate

    res = evaluate(wa, cases)
    assert res["n_views"] == 2 and res["n_true"] >= 6 and 0 <= (res["instance_recall"] or 0) <= 1
    # The peak threshold reaches the detector: above any sigmoid, nothing is found.
    assert (
        evaluate(wa, cases, centre_threshold=1.01)["n_found"]
        == 0
        < evaluate(wa, cases, centre_threshold=0.0)["n_found"]
    )
    # Tampered weights are refused.
    raw = bytearray((tmp_path / "a.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "a.safetensors").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="do not match"):
        load_detector(tmp_path / "a.safetensors")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--epochs", "0"], "positive"),
        (["--out", "w.pt"], ".safetensors"),
        (["--threads", "0"], "--threads"),
        (["--clutter", "1.5"], "--clutter"),
        (["--local-contrast", "0.3"], "--local-contrast"),
    ],
)
def test_train_detector_bad_input(tmp_path, run_cli, args, match):
    rc, _, err = run_cli("train-detector", "--data", tmp_path, "--out", tmp_path / "w.safetensors", *args)
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("train-detector", "--data", tmp_path, "--out", tmp_path / "w.safetensors")
    assert rc == 2 and "no data-engine case" in err


def test_clutter_hides_the_bone_and_moves_nothing(cases):
    from SpineDARTLib.nets.clutter import add_clutter, clutter_field
    from SpineDARTLib.nets.detector_data import DetectorDataset, normalise

    # A bright square (bone) on a flat body, a collimator's shadow in the first rows.
    img = np.zeros((64, 64), np.float32)
    img[24:40, 24:40] = 1.0
    img[:6] = -1.0
    img = normalise(img)
    f1 = clutter_field(img.shape, np.random.default_rng(4))
    assert np.array_equal(f1, clutter_field(img.shape, np.random.default_rng(4))) and np.isfinite(f1).all()
    assert float(np.abs(f1).max()) > 0.05
    contrast = []
    for seed in range(20):
        out = add_clutter(img, np.random.default_rng(seed))
        assert np.ptp(out[:6]) == 0  # nothing reaches the detector in the collimator's shadow
        lo, hi = np.percentile(out, [0.5, 99.5])
        contrast.append((out[28:36, 28:36].mean() - out[44:60, 8:20].mean()) / (hi - lo))
    before = (img[28:36, 28:36].mean() - img[44:60, 8:20].mean()) / np.ptp(img)
    # The other bodies take their share of the image's range: the bone's share shrinks.
    assert np.median(np.abs(contrast)) < 0.8 * before
    # In training, clutter changes the image and nothing else (its draws come after the geometry's).
    train, val = prepare(cases, TINY)
    plain = DetectorDataset(train + val, TINY, augment=True, seed=2)
    cluttered = DetectorDataset(train + val, TINY, augment=True, seed=2, clutter=1.0)
    (xa, sa, ta), (xb, sb, tb) = plain[0], cluttered[0]
    assert not torch.equal(xa, xb)
    for k in ("centres", "landmarks", "visible", "masks", "paths"):
        assert np.array_equal(sa[k], sb[k]), k
    assert np.array_equal(ta["centre_hm"], tb["centre_hm"])
    with pytest.raises(UserError, match="--clutter"):
        DetectorDataset(train, TINY, clutter=-0.1)


def test_local_contrast_ignores_slow_fields():
    from SpineDARTLib.nets.detector import local_contrast

    rng = np.random.default_rng(0)
    img = np.zeros((64, 64), np.float32)
    img[20:44, 24:40] = 0.3  # a vertebra
    img += 0.01 * rng.standard_normal(img.shape).astype(np.float32)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    slow = (2.0 * xx + 1.5 * np.exp(-((xx - 0.2) ** 2 + (yy - 0.8) ** 2) / 0.5)).astype(np.float32)
    a = local_contrast(torch.from_numpy(img)[None, None], 5.0)[0, 0].numpy()
    b = local_contrast(torch.from_numpy(img + slow)[None, None], 5.0)[0, 0].numpy()
    assert a.shape == img.shape and np.abs(a).max() <= 1.0
    # A body far larger than the neighbourhood barely changes what the network gets …
    assert np.abs(a - b)[16:48, 16:48].mean() < 0.05
    assert np.allclose(local_contrast(torch.ones(1, 1, 32, 32), 4.0).numpy(), 0.0, atol=1e-3)
    # A neighbourhood wider than the image: the reflection is cut to the image, no crash.
    assert torch.isfinite(local_contrast(torch.rand(1, 1, 16, 16), 10.0)).all()
    # Weights and checkpoints from before the option: their configuration has no such key and is
    # the plain one-channel network; the plain network's configuration still reads that way.
    old = DetectorConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "local_contrast"})
    assert old.local_contrast == 0.0 and "local_contrast" not in old.to_dict()
    assert Detector(old).backbone.patch_embed.proj.in_channels == 1
    lc = DetectorConfig.from_dict({**TINY.to_dict(), "local_contrast": 0.1})
    assert Detector(lc).backbone.patch_embed.proj.in_channels == 2 and lc.to_dict()["local_contrast"] == 0.1
    for bad in (0.3, -0.1, float("nan")):  # any configuration, a card's included, is checked
        with pytest.raises(UserError, match="--local-contrast"):
            DetectorConfig(local_contrast=bad)


def test_clutter_and_local_contrast_belong_to_the_run(cases, tmp_path, run_cli):
    base = ["--data", cases, "--size", "tiny", "--epochs", "2", "--batch-size", "2", "--threads", "1",
            "--local-contrast", "0.1"]  # fmt: skip
    out = tmp_path / "c.safetensors"
    rc, text, err = run_cli("train-detector", *base, "--out", out, "--clutter", "0.5", "--stop-after-steps", "1")
    assert rc == 0 and "continue with --resume" in text, err
    # Resumed with another clutter fraction or input: refused in one line, the checkpoint kept.
    for other in (["--clutter", "0.5", "--local-contrast", "0"], []):
        rc, _, err = run_cli("train-detector", *base, *other, "--out", out, "--resume")
        assert rc == 2 and "another configuration" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("train-detector", *base, "--out", out, "--resume", "--clutter", "0.5")
    assert rc == 0, err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["clutter"] == 0.5 and "--clutter 0.5" in card["command"] and card["epochs"] == 2
    # The second input channel is part of the network: its weights load and run as trained.
    model, card = load_detector(out)
    assert card["config"]["local_contrast"] == 0.1 and model.config.local_contrast == 0.1
    assert isinstance(detect(model, np.random.default_rng(1).random((80, 96)).astype(np.float32)), list)


class _Designed(torch.nn.Module):
    """Head outputs designed by hand (the decoder's geometry is what is tested, not training)."""

    def __init__(self, config: DetectorConfig, outputs: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.config, self.outputs = config, outputs

    def forward(self, x):
        return {k: v[None] for k, v in self.outputs.items()}


def test_decoding_maps_peaks_back_to_image_pixels():
    g = TINY.grid
    out = {k: torch.zeros(c, g, g) for k, c in HEADS.items()}
    out["centre"][:] = -10.0
    out["landmarks"][:] = -10.0
    # One vertebra at cell (6, 9) + (0.25, -0.5); its SPT 3 cells right of it, found by the heatmap.
    out["centre"][0, 9, 6] = 5.0
    out["centre_offset"][:, 9, 6] = torch.tensor([0.25, -0.5])
    j = LANDMARKS.index("SPT")
    out["displacement"][2 * j : 2 * j + 2, 9, 6] = torch.tensor([3.0, 0.0]) / DISPLACEMENT_SCALE
    out["landmarks"][j, 8, 9] = 4.0  # peak one cell from the regressed (9.25, 8.5)
    out["landmark_offset"][2 * j : 2 * j + 2, 8, 9] = torch.tensor([0.3, 0.4])
    out["level"][0, 9, 6] = 13.0 / LEVEL_SCALE
    out["paths"][6:8, 9, 6] = torch.tensor([-2.0, 1.0]) / DISPLACEMENT_SCALE  # right target
    out["region"][0, 9, 6] = 3.0
    out["mask_filter"][-1, 9, 6] = 6.0  # a mask that is everywhere "in"
    image = np.random.default_rng(0).normal(size=(120, 80)).astype(np.float32)  # portrait: letterboxed
    found = detect(_Designed(TINY, out), image)
    assert len(found) == 1
    v = found[0]
    _, box = letterbox(image, 64)
    assert np.allclose(v.centre, box.to_image(np.array([6.25, 8.5]) * 4))
    assert np.allclose(v.landmarks["SPT"], box.to_image(np.array([9.3, 8.4]) * 4), atol=1e-5)
    assert v.confidence["SPT"] > 0.9 and v.confidence["BC"] < 0.01
    assert v.mask.shape == (120, 80) and v.mask.min() > 0.99
    assert v.lumbar_prob > 0.9 and abs(v.level_guess - 13.0) < 1e-5
    assert np.allclose(v.paths["right"]["target"], box.to_image(np.array([4.25, 9.5]) * 4))
    assert np.allclose(v.paths["left"]["entry"], v.centre)


def _v(y, guess, lumbar):
    return DetectedVertebra(score=1.0, centre=np.array([50.0, y]), lumbar_prob=lumbar, level_guess=guess)


def test_evaluation_splits_recall_by_view_and_image():
    from SpineDARTLib.bench.detector_eval import precision_recall, summarise, view_kind

    assert [view_kind(n) for n in ("ort-ap", "L1-ort-lat", "rand0-a", "T12-rand2-b")] == [
        "ap",
        "lateral",
        "random",
        "random",
    ]
    hit = {"level": "L1", "errors_mm": [1.0], "confidences": [0.9], "mask_dice": 0.8, "path_errors_mm": [],
           "level_no_anchor": "L1", "anchor_no_anchor": "guess", "level_target_anchor": "L1"}  # fmt: skip
    recs = [
        {"view": "L1-ort-ap", "degraded": False, "n_true": 2, "n_found": 2, "matched": [hit, hit]},
        {"view": "L1-ort-lat", "degraded": True, "n_true": 4, "n_found": 1, "matched": [hit]},
        {"view": "L1-rand0-a", "degraded": False, "n_true": 3, "n_found": 0, "matched": []},
    ]
    s = summarise(recs)
    assert s["instance_recall"] == 3 / 9
    assert {k: v["recall"] for k, v in s["recall_by_view"].items()} == {"ap": 1.0, "lateral": 0.25, "random": 0.0}
    assert s["recall_by_image"]["clean"] == {"n_true": 5, "n_matched": 2, "recall": 0.4}
    assert s["recall_by_image"]["degraded"]["recall"] == 0.25
    assert s["precision_recall"] is None  # records without scored detections
    # Scored detections: 4 true vertebrae; by score 0.9 hit, 0.8 miss, 0.6 hit, 0.3 hit, 0.1 miss.
    scored = [
        {"view": "ort-ap", "degraded": False, "n_true": 2, "detections": [[0.9, True], [0.1, False], [0.3, True]]},
        {"view": "ort-lat", "degraded": False, "n_true": 2, "detections": [[0.8, False], [0.6, True]]},
    ]
    pr = summarise([dict(r, n_found=len(r["detections"]), matched=[]) for r in scored])["precision_recall"]
    # Precision envelope at the recall steps 1/4, 2/4, 3/4: 1, 3/4, 3/4 (from 0.3's 3 of 4).
    assert pr["average_precision"] == round(0.25 * 1 + 0.25 * 0.75 + 0.25 * 0.75, 4)
    assert pr["at"]["0.2"] == {"recall": 0.75, "precision": 0.75}
    assert pr["at"]["0.5"] == {"recall": 0.5, "precision": 0.6667}
    assert pr["best_f1"]["threshold"] == 0.3 and "0.05" not in pr["at"]  # below every score: not reached
    # Run at 0.05, the curve's rows start there (nothing was found between 0.05 and 0.1).
    floor = precision_recall(scored, 0.05)
    assert floor["down_to_threshold"] == 0.05 and floor["at"]["0.05"] == {"recall": 0.75, "precision": 0.6}
    # Tied scores count the miss first: 1 true, a hit and a miss at 0.5 → precision 1/2 when recall is reached.
    tie = precision_recall([{"view": "ort-ap", "n_true": 1, "detections": [[0.5, True], [0.5, False]]}])
    assert tie["average_precision"] == 0.5


def test_order_and_level_anchors():
    # T11..L2 from top to bottom, given shuffled; guesses off by one level.
    vs = [_v(150.0, 12.6, 0.9), _v(30.0, 10.8, 0.1), _v(90.0, 12.1, 0.8), _v(60.0, 11.9, 0.2)]
    assert order_and_levels(vs) == "ribs"
    assert [v.level for v in sorted(vs, key=lambda v: v.order)] == ["T11", "T12", "L1", "L2"]
    # No rib-bearing/lumbar transition: the guesses' median offset.
    vs = [_v(30.0, 1.2, 0.0), _v(60.0, 2.1, 0.0), _v(90.0, 2.9, 0.0)]
    assert order_and_levels(vs) == "guess"
    assert [v.level for v in sorted(vs, key=lambda v: v.order)] == ["T2", "T3", "T4"]
    # The clinician's target: the vertebra nearest the image centre (C-arm centred on it).
    assert order_and_levels(vs, image_shape=(120, 100), target_level="T8") == "target"
    assert [v.level for v in sorted(vs, key=lambda v: v.order)] == ["T7", "T8", "T9"]
    assert order_and_levels([]) == "none"


def test_views_matched_by_level_and_epipolar_consistency():
    from SpineDARTLib.geometry import from_carm
    from SpineDARTLib.nets.auto import match_views

    views = [from_carm(a, 0.0, 620, 1020, (256, 256), pixel_spacing_mm=(1.0, 1.0)) for a in (0.0, 90.0)]
    centres = {"T12": [0.0, 0.0, 35.0], "L1": [0.0, 2.0, 0.0], "L2": [0.0, 4.0, -35.0], "L3": [0.0, 6.0, -70.0]}
    per_view = []
    for i, p in enumerate(views):
        dets = []
        for k, (level, x) in enumerate(centres.items()):
            if i == 1 and level == "L3":
                continue  # not found in the second view
            uv = p.project(np.array([x]))[0]
            if i == 1 and level == "T12":
                uv = uv + np.array([0.0, 30.0])  # mislabelled: 30 mm along the spine, off the epipolar line
            d = DetectedVertebra(score=0.9, centre=uv, lumbar_prob=0.5, level_guess=float(k))
            d.level, d.order = level, k
            d.landmarks = {n: uv + 1.0 for n in LANDMARKS}
            d.confidence = {n: (0.05 if n == "SPT" else 0.8) for n in LANDMARKS}
            d.mask = np.full((256, 256), 0.7)
            dets.append(d)
        per_view.append(dets)
    ev = match_views(per_view, views, ["target", "target"])
    assert sorted(ev.landmarks.views[0]) == ["L1", "L2"] == sorted(ev.landmarks.views[1])
    assert "epipolar" in ev.rejected["T12"] and ev.rejected["L3"] == "found in view 1 only"
    l1 = ev.landmarks.views[1]["L1"]
    assert "SPT" not in l1.landmarks and len(l1.landmarks) == len(LANDMARKS) - 1  # low confidence left out
    assert ev.masks[0]["L2"].all() and ev.landmarks.source == "detector"


def test_views_paired_before_levels():
    """A vertebra missed in one view and a spurious detection in the other shift the per-view levels
    (the two views then disagree everywhere); pairing by epipolar geometry first, ordering by height
    and skipping a level at a double gap labels both views alike."""
    from SpineDARTLib.geometry import from_carm
    from SpineDARTLib.nets.auto import match_views, pair_views

    views = [from_carm(a, 0.0, 620, 1020, (256, 256), pixel_spacing_mm=(1.0, 1.0)) for a in (0.0, 90.0)]
    truth = {"T12": 70.0, "L1": 35.0, "L2": 0.0, "L3": -35.0, "L4": -70.0}  # z (mm); the C-arm is centred on L2

    def make() -> list[list[DetectedVertebra]]:
        per_view = []
        for i, p in enumerate(views):
            dets = []
            for k, (level, z) in enumerate(truth.items()):
                if i == 1 and level == "L1":
                    continue  # missed in the lateral view
                uv = p.project(np.array([[0.0, 3.0, z]]))[0]
                dets.append(DetectedVertebra(score=0.9, centre=uv, lumbar_prob=0.9, level_guess=float(11 + k)))
            if i == 0:  # a spurious detection beside the spine, in the AP view only
                dets.append(
                    DetectedVertebra(score=0.3, centre=np.array([40.0, 150.0]), lumbar_prob=0.9, level_guess=13.0)
                )
            per_view.append(dets)
        return per_view

    shapes = [(256, 256), (256, 256)]
    old = make()
    for dets in old:
        order_and_levels(dets, shapes[0], "L2")
    per_level = [{d.level: d for d in dets if d.level} for dets in old]
    assert any(  # the per-view anchors disagree: some level names another vertebra in each view
        lv in per_level[1] and abs(per_level[0][lv].centre[1] - per_level[1][lv].centre[1]) > 20 for lv in per_level[0]
    )
    per_view = make()
    assert pair_views(per_view, views, shapes, "L2") == "target"
    for i, dets in enumerate(per_view):
        for d in dets:
            if d.level is None:
                continue
            z = truth[d.level]
            assert np.linalg.norm(d.centre - views[i].project(np.array([[0.0, 3.0, z]]))[0]) < 1e-6, (i, d.level)
    assert {d.level for d in per_view[1]} == {"T12", "L2", "L3", "L4"}  # L1 skipped at the double gap
    assert [d.level for d in per_view[0] if d.score < 0.5] == [None]  # the spurious one has no partner
    ev = match_views(per_view, views, ["target", "target"])
    assert sorted(ev.landmarks.views[1]) == ["L2", "L3", "L4", "T12"] and ev.rejected == {"L1": "found in view 1 only"}
    # Without an anchor the last rib-bearing pair is T12 (every pair here reads lumbar: the guesses).
    per_view = make()
    assert pair_views(per_view, views, shapes, None) == "guess"
    assert {d.level for d in per_view[1]} == {"T12", "L2", "L3", "L4"}
    assert pair_views([[], per_view[1]], views, shapes, "L2") is None  # nothing to pair: levels left as they were


def test_plan_without_landmarks_runs_the_detector(cases, tmp_path, run_cli):
    """No --landmarks: the detector runs on both views; an (untrained) network that finds nothing
    gives one clear line naming the view, not a crash or a plan on nothing."""
    from SpineDARTLib.nets.detector_train import train_detector

    weights = tmp_path / "tiny.safetensors"
    train_detector(cases, weights, TINY, epochs=1, batch_size=2, progress=lambda _m: None)
    views = cases / "case_0000" / "views"
    xrays = ["--xray", views / "ort-ap.tif", "--xray", views / "ort-lat.tif"]
    rc, _, err = run_cli("plan", *xrays, "--detector", weights, "--levels", "L4", "--out", tmp_path / "o")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "found no vertebra" in err or "consistently in both views" in err
    rc, _, err = run_cli("plan", *xrays, "--detector", tmp_path / "none.safetensors", "--out", tmp_path / "o")
    assert rc == 2 and "file not found" in err


def test_shipped_detector_on_the_demo_case():
    """The shipped weights (when they ship): card and hash, trained on seeds below the benchmark's
    reserved range, and on the demo's two views L1-L3 found where the demo's landmarks put them."""
    from SpineDARTLib.bench.sets import RESERVED_SEED
    from SpineDARTLib.fit.landmarks2d import read_landmarks_2d
    from SpineDARTLib.nets.annotator import DETECTOR_WEIGHTS, load_annotator
    from SpineDARTLib.nets.auto import auto_evidence
    from SpineDARTLib.resources import demo_case_dir, resources_dir
    from SpineDARTLib.xray import read_xray

    weights = resources_dir().joinpath(*DETECTOR_WEIGHTS)
    if not weights.is_file():
        pytest.skip("no trained detector ships yet")
    _, card = load_detector(weights)
    assert card["data"]["runs"] and all(r["seed"] < RESERVED_SEED for r in card["data"]["runs"])
    assert weights.stat().st_size <= 20 * 2**20
    case = demo_case_dir()
    xrays = [read_xray(case / f"xray_{k}.png") for k in "ab"]
    ev = auto_evidence(load_annotator(), [x.image for x in xrays], [x.projection for x in xrays], "L2")
    given = read_landmarks_2d(case / "landmarks.json")
    for i, x in enumerate(xrays):
        mm = float(np.mean(x.projection.pixel_spacing_mm))
        assert {"L1", "L2", "L3"} <= set(ev.landmarks.views[i]), (i, ev.found, ev.rejected)
        for level in ("L1", "L2", "L3"):
            got, ref = ev.landmarks.views[i][level], given.views[i][level]
            assert np.linalg.norm(got.centroid - ref.centroid) * mm < 6.0, (i, level)  # BC may be dropped by gt-noisy


def test_geoplan_triangulates_two_views_paths():
    from SpineDARTLib.geometry import from_carm
    from SpineDARTLib.plan.geoplan import geoplan_cannulas

    views = [from_carm(a, 0.0, 620, 1020, (256, 256), pixel_spacing_mm=(1.0, 1.0)) for a in (0.0, 90.0)]
    truth = {"left": ([-25.0, -30.0, 2.0], [-5.0, 15.0, 0.0]), "right": ([25.0, -30.0, 2.0], [5.0, 15.0, 0.0])}
    paths = [
        {side: {n: p.project(np.array([x]))[0] for n, x in zip(("entry", "target"), pts, strict=True)}
         for side, pts in truth.items()}
        for p in views
    ]  # fmt: skip
    cannulas, missing = geoplan_cannulas(paths, views, "L2")
    assert not missing and [c.side for c in cannulas] == ["left", "right"]
    for c in cannulas:
        assert np.allclose(c.entry, truth[c.side][0], atol=1e-6) and np.allclose(c.target, truth[c.side][1], atol=1e-6)
        assert c.gauge == 11
    # The lateral view's left target 20 px off its epipolar line (horizontal here): refused, with why;
    # a side one view did not predict: named.
    paths[1]["left"]["target"] = paths[1]["left"]["target"] + np.array([0.0, 20.0])
    del paths[0]["right"]
    cannulas, missing = geoplan_cannulas(paths, views, "L2")
    assert cannulas == [] and "do not meet" in missing["left"] and "both views" in missing["right"]


class _Oracle(torch.nn.Module):
    """A 'network' whose heads are the ground truth of a case's views (looked up by image): the
    detection → matching → triangulation → scoring chain is what is tested."""

    def __init__(self, config: DetectorConfig, case_dir, view_names) -> None:
        from SpineDARTLib.anatomy.levels import LEVELS
        from SpineDARTLib.xray import read_xray

        super().__init__()
        self.config, self.known = config, []
        g, s = config.grid, float(config.stride)
        doc = json.loads((case_dir / "case.json").read_text())
        entries = {v["name"]: v for v in doc["views"]}
        for name in view_names:
            xr = read_xray(case_dir / entries[name]["image"])
            labels = json.loads((case_dir / entries[name]["labels"]).read_text())
            x, box = letterbox(xr.image, config.image_size)
            out = {k: torch.zeros(c, g, g) for k, c in HEADS.items()}
            out["centre"][:] = -10.0
            out["landmarks"][:] = -10.0
            for inst in labels["instances"]:
                if inst["mask_pixels"] < 30 or not inst["landmarks"]["BC"]["in_fov"]:
                    continue
                c = box.to_net(inst["landmarks"]["BC"]["uv"]) / s
                cx, cy = np.floor(c + 0.5).astype(int)
                out["centre"][0, cy, cx] = 10.0
                out["centre_offset"][:, cy, cx] = torch.tensor(c - [cx, cy], dtype=torch.float32)
                out["level"][0, cy, cx] = LEVELS.index(inst["level"]) / LEVEL_SCALE
                out["mask_filter"][-1, cy, cx] = 6.0
                pts = [box.to_net(inst["trajectories"][side][n]["uv"]) / s for side, n in PATH_POINTS]
                disp = (
                    np.array(pts) - np.array([cx, cy]) - out["centre_offset"][:, cy, cx].numpy()
                ) / DISPLACEMENT_SCALE
                out["paths"][:, cy, cx] = torch.tensor(disp.reshape(-1), dtype=torch.float32)
            self.known.append((torch.from_numpy(x), out))

    def forward(self, x):
        for image, out in self.known:
            if torch.equal(image, x[0, 0]):
                return {k: v[None] for k, v in out.items()}
        raise AssertionError("an image the oracle does not know")


def test_geoplan_bench_task_scores_triangulated_paths(cases):
    from SpineDARTLib.bench.geoplan import run_geoplan_task
    from SpineDARTLib.bench.run import summarise
    from SpineDARTLib.bench.sets import tasks_of

    (task,) = tasks_of(cases / "case_0000", "ort")
    from SpineDARTLib.nets.annotator import Annotator

    oracle = _Oracle(DetectorConfig(image_size=96, window_size=3), cases / "case_0000", task.views)
    r = run_geoplan_task(task, Annotator(oracle, None, {"detector": "oracle", "refiner": None}, {}))
    assert r["converged"] and r["method"] == "geoplan", r["reason"]
    # The true paths, through decoding, matching and triangulation, give back the true trajectories.
    assert r["entry_err_mm"] < 0.05 and r["target_err_mm"] < 0.05 and r["angle_err_deg"] < 0.1
    assert [c["side"] for c in r["plan"]["cannulas"]] == ["left", "right"]
    assert all(c["true"]["grade"] in "ABCD" and not c["safe"] for c in r["plan"]["cannulas"])
    s = summarise([r])
    assert s["dice_mean"] is None and s["completion_rate"] == 1.0 and s["entry_err_mm"] == r["entry_err_mm"]
    # A view the detector finds nothing in: a failed task with the detector's reason.
    for _, out in oracle.known[1:]:
        out["centre"][:] = -10.0
    r = run_geoplan_task(task, Annotator(oracle, None, {"detector": "oracle", "refiner": None}, {}))
    assert not r["converged"] and r["reason"].startswith("detector: L4") and r["plan"]["cannulas"] == []


def _zero_head_refiner():
    from SpineDARTLib.nets.refiner import Refiner, RefinerConfig

    model = Refiner(RefinerConfig(crop_px=32, mm_per_px=2.0, decoder_dim=16)).eval()
    for head in (model.heatmaps, model.mask, model.log_sigma):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    return model


def test_annotator_runs_the_second_stage_on_what_the_first_finds():
    """The annotator is the first stage, then the refiner on each vertebra it found at the X-ray's
    own scale: with a first stage that finds a vertebra in every cell (constant centre map) and a
    refiner whose heads are zero (landmarks at the crop's centre, σ one crop pixel), the centres
    stay, every confidence becomes the refiner's, and each mask covers the crop at the given mm per
    pixel. Its key names both weights, and only the detector's without a refiner (older records)."""
    from SpineDARTLib.nets.annotator import Annotator
    from SpineDARTLib.nets.detect import SIGMA_HALF_MM

    torch.manual_seed(0)
    det = Detector(TINY).eval()
    torch.nn.init.zeros_(det.heads["centre"].weight)
    torch.nn.init.constant_(det.heads["centre"].bias, 5.0)
    image = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    first = Annotator(det, None, {"detector": "d", "refiner": None}, {})
    both = Annotator(det, _zero_head_refiner(), {"detector": "d", "refiner": "r"}, {})
    assert first.key == "d" and both.key == "d+r"
    plain = first(image, 1.0)
    assert plain and not all(v == pytest.approx(1 / (1 + 2.0 / SIGMA_HALF_MM)) for v in plain[0].confidence.values())
    for mm_per_px, half in ((1.0, 32), (2.0, 16)):
        refined = both(image, mm_per_px)
        assert len(refined) == len(plain)
        for p, r in zip(plain, refined, strict=True):
            assert np.allclose(p.centre, r.centre, atol=1e-3)
            assert all(v == pytest.approx(1 / (1 + 2.0 / SIGMA_HALF_MM)) for v in r.confidence.values())
        # 32 crop px at 2 mm: 64 image px wide at 1 mm per pixel, 32 at 2 mm.
        u, v = np.round(refined[0].centre).astype(int)
        row = refined[0].mask[v]
        assert row[max(u - half + 3, 0)] == pytest.approx(0.5) or u - half + 3 < 0
        assert (row > 0).sum() <= 2 * half + 2


def test_annotator_files(tmp_path, monkeypatch):
    """Given weights must exist (one line naming the file); without a shipped refiner the first stage
    runs alone; a shipped refiner is used by default."""
    from SpineDARTLib import resources
    from SpineDARTLib.nets.annotator import annotator_files

    (tmp_path / "models").mkdir()
    det = tmp_path / "det.safetensors"
    det.write_bytes(b"x")
    monkeypatch.setattr(resources, "resources_dir", lambda: tmp_path)
    assert annotator_files(det, None) == (det, None)
    with pytest.raises(UserError, match="refiner weights not found"):
        annotator_files(det, tmp_path / "nope.safetensors")
    with pytest.raises(UserError, match="no trained detector is installed"):
        annotator_files(None, None)
    shipped = tmp_path / "models" / "refiner.safetensors"
    shipped.write_bytes(b"y")
    assert annotator_files(det, None) == (det, shipped)


def test_plan_and_bench_refuse_a_missing_refiner(tmp_path, run_cli):
    case = tmp_path / "nope.safetensors"
    rc, _, err = run_cli("plan", "--xray", case, "--xray", case, "--refiner", case, "--out", tmp_path / "o")
    assert rc == 2 and "file not found" in err and len(err.strip().splitlines()) == 1
    bench = ("bench", "--set", "synthetic-ort", "--init", "auto")
    rc, _, err = run_cli(*bench, "--refiner", case, "--out", tmp_path / "b")
    assert rc == 2 and "file not found" in err and "nope.safetensors" in err


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.float32),  # no spine: nothing at all
        -np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32),  # inverted contrast
        np.ones((6, 6), np.float32),  # a tiny image
        np.random.default_rng(2).normal(size=(3, 200)).astype(np.float32),  # a sliver
    ],
    ids=["blank", "inverted", "tiny", "sliver"],
)
def test_annotator_on_bad_images_does_not_crash(image):
    """Whatever the image, both stages give a list (empty: "no vertebra found" for that view) with
    finite positions and image-sized masks, even where every cell is a peak and crops leave the image."""
    from SpineDARTLib.nets.annotator import Annotator

    torch.manual_seed(0)
    det = Detector(TINY).eval()
    torch.nn.init.zeros_(det.heads["centre"].weight)
    torch.nn.init.constant_(det.heads["centre"].bias, 5.0)
    for annotator in (
        Annotator(Detector(TINY).eval(), None, {"detector": "d", "refiner": None}, {}),
        Annotator(det, _zero_head_refiner(), {"detector": "d", "refiner": "r"}, {}),
    ):
        found = annotator(image, 1.0)
        assert isinstance(found, list)
        for d in found:
            assert np.isfinite(d.centre).all() and all(np.isfinite(p).all() for p in d.landmarks.values())
            assert d.mask.shape == image.shape and np.isfinite(d.mask).all()
