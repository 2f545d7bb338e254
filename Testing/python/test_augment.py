"""Degradations and domain randomisation: deterministic, physical in direction, and labels that
follow the image's distortion."""

from __future__ import annotations

import numpy as np
import pytest

from SpineDARTLib.synth.augment import Distortion, degrade, randomize


def _phantom(n=128):
    v, u = np.mgrid[0:n, 0:n].astype(float)
    img = 2.0 * np.exp(-(((u - 40) ** 2 + (v - 90) ** 2) / 60.0)) + 0.5 * (np.abs(u - 64) < 20)
    return img.astype(np.float32)


def test_distortion_round_trip_and_size():
    d = Distortion.with_max_shift((128, 128), 2.5)
    corner = np.array([[0.0, 0.0]])
    assert np.linalg.norm(d.forward(corner) - corner) == pytest.approx(2.5, rel=1e-6)
    pts = np.random.default_rng(0).uniform(0, 127, (50, 2))
    assert np.abs(d.inverse(d.forward(pts)) - pts).max() < 1e-3
    # A bright dot lands where forward() says.
    img = np.zeros((128, 128), np.float32)
    img[10:13, 10:13] = 1.0
    out = d.warp(img)
    vv, uu = np.nonzero(out > 0.5)
    assert np.linalg.norm([uu.mean(), vv.mean()] - d.forward(np.array([[11.0, 11.0]]))[0]) < 0.5


def test_degrade_is_seeded_and_keeps_the_anatomy():
    img = _phantom()
    a, rec = degrade(img, np.random.default_rng(5))
    b, _ = degrade(img, np.random.default_rng(5))
    c, _ = degrade(img, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == img.shape and np.isfinite(a).all()
    assert not np.allclose(a, img) and np.corrcoef(a.ravel(), img.ravel())[0, 1] > 0.8
    assert set(rec) >= {"strength", "beam_hardening", "scatter_fraction", "photons_per_pixel", "unsharp_amount"}


def test_randomize_moves_masks_with_the_image():
    img = _phantom()
    mask = np.zeros((1, 128, 128), bool)
    mask[0, 85:96, 35:46] = True
    for seed in range(6):
        out, masks, dist, rec = randomize(img, np.random.default_rng(seed), mask)
        assert out.shape == img.shape and np.isfinite(out).all() and masks.shape == mask.shape
        vv, uu = np.nonzero(masks[0])
        moved = dist.forward(np.array([[40.0, 90.0]]))[0]
        assert np.linalg.norm([uu.mean(), vv.mean()] - moved) < 0.6, (seed, rec)


def _ct():
    """A torso-like block: air, soft tissue, a bone cylinder with a dense rim, a metal rod."""
    i, j, k = np.mgrid[0:40, 0:40, 0:30].astype(float)
    hu = np.full(i.shape, -1000.0, np.float32)
    body = (i - 20) ** 2 + (j - 20) ** 2 < 18**2
    hu[body] = 40.0
    r = np.hypot(i - 20, j - 20)
    hu[r < 6] = 250.0
    hu[(r >= 4.5) & (r < 6)] = 1100.0
    hu[2:4, 19:21, :] = 3071.0
    return hu, np.diag([1.0, 1.0, 1.0, 1.0])


def test_ct_appearance_is_seeded_and_weakens_bone_only():
    from SpineDARTLib.synth.ct_appearance import BONE_SCALE, randomize_ct

    hu, affine = _ct()
    a, rec = randomize_ct(hu, affine, np.random.default_rng(3))
    b, rec_b = randomize_ct(hu, affine, np.random.default_rng(3))
    assert rec == rec_b and np.array_equal(a, b)
    assert not np.array_equal(a, randomize_ct(hu, affine, np.random.default_rng(4))[0])
    assert BONE_SCALE[0] <= rec["bone_scale"] <= BONE_SCALE[1]
    # Far from any edge, blur changes nothing much: the core's contrast over tissue is scaled as drawn.
    core = (slice(19, 22), slice(19, 22), slice(10, 20))
    assert np.allclose(a[core].mean() - 40.0, rec["bone_scale"] * 210.0, rtol=0.15, atol=25.0)
    assert a[0, 0, 15] == hu[0, 0, 15]  # air stays air (no texture, nothing to blur there)
    assert a[2:4, 19:21, 10:20].mean() > 1500.0  # metal is not bone: not scaled
    # Texture lives in soft tissue with about the drawn spread (before blur, which only lowers it).
    soft = np.zeros(hu.shape, bool)
    soft[8:14, 8:14, 5:25] = True
    assert 0.2 * rec["texture_sd_hu"] < a[soft].std() < 2.0 * rec["texture_sd_hu"]
    assert np.isfinite(a).all() and a.dtype == np.float32
