"""The annotation network's second stage: crop geometry, crops of a data-engine case, a tiny training
run (resumable, same weights), what it learns, its use on detections, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from SpineDARTLib.anatomy.landmarks import LANDMARKS
from SpineDARTLib.errors import UserError
from SpineDARTLib.nets.detect import SIGMA_HALF_MM, DetectedVertebra, refine
from SpineDARTLib.nets.refiner import TINY_REFINER, Refiner, RefinerConfig
from SpineDARTLib.nets.refiner_data import JITTER_MM, RefinerSamples, crop_matrix, cut, prepare, to_crop
from SpineDARTLib.nets.refiner_train import batch, evaluate, load_refiner, refiner_loss

TINY = RefinerConfig(**TINY_REFINER)


@pytest.fixture
def cases(synth_set, tmp_path):
    shutil.copytree(synth_set / "a", tmp_path / "data")
    return tmp_path / "data"


def test_crop_cuts_the_image_where_its_matrix_says():
    image = np.zeros((90, 120), np.float32)
    image[40, 70] = 1.0  # a dot at (u, v) = (70, 40)
    cfg = RefinerConfig(crop_px=32, mm_per_px=1.0)
    for rot, scale in ((0.0, 1.0), (30.0, 1.0), (-90.0, 0.5)):
        m = crop_matrix([66.0, 45.0], 1.0, cfg, rot, scale)
        assert np.allclose(m[:, :2] @ [15.5, 15.5] + m[:, 2], [66.0, 45.0])  # the crop's centre
        dot = to_crop(m, [70.0, 40.0])
        assert np.allclose(to_crop(m, m[:, :2] @ dot + m[:, 2]), dot)
        c = cut(image, m, 32, edge=False)
        peak = np.unravel_index(np.argmax(c), c.shape)
        assert np.hypot(peak[1] - dot[0], peak[0] - dot[1]) < 1.0, (rot, peak, dot)
    # mm per pixel: an image at 0.5 mm per pixel is cut 2 image pixels per crop pixel.
    m = crop_matrix([60.0, 45.0], 0.5, cfg)
    assert np.allclose(m[:, :2], 2 * np.eye(2))


def test_crops_of_a_case(cases):
    train, val = prepare(cases)
    samples = RefinerSamples(train + val)
    assert len(samples) >= 6  # L4 and its neighbours in two views
    rng = np.random.default_rng(0)
    for i in range(len(samples)):
        s = samples.crop(i, TINY, rng, augment=True)
        assert s["image"].shape == (32, 32) and s["mask"].shape == (16, 16) and np.isfinite(s["image"]).all()
        # The body centre is where the crop was cut, within the jitter (and the scale's play).
        off = np.linalg.norm(s["points"][0] - 15.5) * float(s["mm_per_px"])
        assert s["visible"][0] and off <= JITTER_MM * 1.01 + 1e-3, off
        # Its own mask covers it: the cell under the body centre is mostly vertebra.
        cell = np.clip(np.floor((s["points"][0] + 0.5) / 2), 0, 15).astype(int)
        assert s["mask"][cell[1], cell[0]] > 0.5
    # Validation crops are fixed by (seed, sample); training ones change.
    a = batch(samples, np.arange(3), TINY, None, seed=1)
    b = batch(samples, np.arange(3), TINY, None, seed=1)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["points"], b["points"])


def test_refiner_learns_the_landmarks_of_a_few_crops(cases):
    """A tiny refiner fitted to a few fixed crops for 150 steps: the landmark error falls to a
    fraction of what the untrained one makes, and the predicted spread follows it."""
    torch.manual_seed(0)
    train, val = prepare(cases)
    samples = RefinerSamples(train + val)
    model = Refiner(TINY)
    b = batch(samples, np.arange(len(samples)), TINY, None, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.eval()
    before = evaluate(model, samples)
    model.train()
    for _ in range(150):
        loss, _ = refiner_loss(model(b["image"]), b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate(model, samples)
    assert after["landmark_mm_median"] < 0.5 * before["landmark_mm_median"], (before, after)
    assert after["mask_dice"] > 0.5, after


def test_refine_maps_the_crop_back_to_the_image():
    """A refiner whose heads are zero puts every landmark at the crop's centre (a uniform
    soft-argmax) with σ of one crop pixel and a mask of 0.5 over the crop: refining a detection must
    give its own centre back, those confidences, and a mask exactly where the crop lies."""
    model = Refiner(RefinerConfig(crop_px=32, mm_per_px=2.0, decoder_dim=16)).eval()
    for head in (model.heatmaps, model.mask, model.log_sigma):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    image = np.random.default_rng(0).normal(size=(100, 140)).astype(np.float32)
    dets = [
        DetectedVertebra(0.9, np.array([70.0, 50.0]), 0.9, 10.0),
        DetectedVertebra(0.8, np.array([5.0, 5.0]), 0.1, 9.0),
    ]
    refine(model, image, 1.0, dets)
    for d, c in zip(dets, ([70.0, 50.0], [5.0, 5.0]), strict=True):
        assert set(d.landmarks) == set(LANDMARKS) and np.allclose(d.centre, c, atol=1e-4)
        assert all(np.allclose(p, c, atol=1e-4) for p in d.landmarks.values())
        assert all(v == pytest.approx(1 / (1 + 2.0 / SIGMA_HALF_MM)) for v in d.confidence.values())
        assert d.mask.shape == image.shape
    # The crop is 64 image pixels wide (32 px at 2 mm, the image at 1 mm): the mask is 0.5 inside.
    m = dets[0].mask
    assert m[50, 70] == pytest.approx(0.5) and m[50, 70 + 30] == pytest.approx(0.5) and m[50, 70 + 34] == 0.0
    assert m[20, 70] == pytest.approx(0.5) and m[14, 70] == 0.0


def test_tiny_training_resumes_to_the_same_weights(cases, tmp_path, run_cli):
    base = ["--data", cases, "--size", "tiny", "--epochs", "2", "--batch-size", "4", "--threads", "1"]
    rc, out, err = run_cli("train-refiner", *base, "--out", tmp_path / "a.safetensors")
    assert rc == 0, err
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["schema"] == "spinedart.refiner-card/1" and card["epochs"] == 2 and card["n_train_samples"] >= 6
    assert [r["seed"] for r in card["data"]["runs"]] == [3] and "train-refiner" in card["command"]
    rc, out, err = run_cli("train-refiner", *base, "--out", tmp_path / "b.safetensors", "--stop-after-steps", "2")
    assert rc == 0 and "continue with --resume" in out and not (tmp_path / "b.safetensors").exists()
    rc, out, err = run_cli("train-refiner", *base, "--out", tmp_path / "b.safetensors", "--resume")
    assert rc == 0, err
    wa, _ = load_refiner(tmp_path / "a.safetensors")
    wb, card_b = load_refiner(tmp_path / "b.safetensors")
    for (ka, va), (kb, vb) in zip(wa.state_dict().items(), wb.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    assert card_b["history"] == card["history"]
    raw = bytearray((tmp_path / "a.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "a.safetensors").write_bytes(bytes(raw))
    with pytest.raises(UserError, match="do not match"):
        load_refiner(tmp_path / "a.safetensors")


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--epochs", "0"], "positive"), (["--out", "w.pt"], ".safetensors"), (["--threads", "0"], "--threads")],
)
def test_train_refiner_bad_input(tmp_path, run_cli, args, match):
    rc, _, err = run_cli("train-refiner", "--data", tmp_path, "--out", tmp_path / "w.safetensors", *args)
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("train-refiner", "--data", tmp_path, "--out", tmp_path / "w.safetensors")
    assert rc == 2 and "no data-engine case" in err and len(err.strip().splitlines()) == 1
