"""``spinedart build-ssm``: member discovery (phantom folders, label maps, level-named meshes, synth
manifests), the resumable cache, the card, ``ssm-info --json``, and one-line answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from SpineDARTLib.anatomy import generate
from SpineDARTLib.anatomy.export import write_phantom
from SpineDARTLib.labelmaps import TOTALSEG_V2, VERSE
from SpineDARTLib.ssm import load_model
from SpineDARTLib.ssm.members import discover, load_member


def _phantoms(root: Path, level: str, seeds, **kw) -> None:
    for s in seeds:
        write_phantom(generate(level, s, 1.5, **kw), root / f"{level}-{s}", volume_spacing_mm=2.0)


def _label_map(path: Path, ids: dict[str, int], seed: int = 5) -> None:
    """Two generated vertebrae (L2 above L3, 45 mm apart) voxelised at 1 mm into one label map."""
    import nibabel as nib

    from SpineDARTLib.meshing import voxelize_mesh

    a, b = generate("L2", seed, 1.5), generate("L3", seed + 1, 1.5)
    v = np.vstack([a.vertices + [0.0, 0.0, 45.0], b.vertices])
    f = np.vstack([a.faces, b.faces + len(a.vertices)])
    occ, A = voxelize_mesh(v, f, spacing_mm=1.0, supersample=1, margin_mm=4.0)
    z = (A[:3, :3] @ np.indices(occ.shape).reshape(3, -1) + A[:3, 3:4])[2].reshape(occ.shape)
    cut = 0.5 * (a.vertices[:, 2].min() + 45.0 + b.vertices[:, 2].max())
    lab = np.where(occ >= 0.5, np.where(z > cut, ids["L2"], ids["L3"]), 0).astype(np.int16)
    nib.save(nib.Nifti1Image(lab, A), str(path))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    _phantoms(root / "phantoms", "L3", range(1, 5))
    _phantoms(root / "phantoms", "L3", [9], fracture="wedge:2")
    (root / "maps").mkdir()
    _label_map(root / "maps" / "case7_seg.nii.gz", TOTALSEG_V2)
    return root


def test_discovery_finds_each_kind_and_skips_what_it_must(inputs):
    found = discover(inputs, ["L2", "L3"])
    kinds = {s.name: s.kind for s in found.sources}
    assert sorted(kinds.values()) == ["labelmap", "labelmap", "phantom", "phantom", "phantom", "phantom"]
    assert "maps/case7_seg.nii.gz:L2" in kinds
    # The fractured phantom is left out by default (a healthy-shape model), kept on request.
    assert [s["name"] for s in found.skipped] == ["phantoms/L3-9"]
    assert len(discover(inputs, ["L2", "L3"], include_abnormal=True).sources) == 7
    # A label map's other levels are its neighbours: skipped without complaint.
    assert {s.level for s in discover(inputs / "maps", ["L2"]).sources} == {"L2"}
    # Members of a label map get rule-based annotations; phantoms bring theirs from vertebra.json.
    m = load_member(next(s for s in found.sources if s.name.endswith(":L3")))
    assert m.annotations.shape == (14, 3) and len(m.faces) > 1000


def test_build_ssm_cli_card_info_and_resume(inputs, tmp_path, run_cli, monkeypatch):
    out = tmp_path / "m" / "l23.npz"
    args = ["build-ssm", "--input", inputs, "--levels", "L2-L3", "--modes", "3", "--iterations", "1", "--out", out]
    rc, stdout, err = run_cli(*args, "--template-spacing", "3")
    assert rc == 0, err
    assert "6 members, 3 modes" in stdout
    model = load_model(out)
    assert model.levels == ("L3", "L2") or model.levels == ("L2", "L3")
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["seed_range"] == [1, 4]  # the generated members' seeds (label maps have none)
    assert len(card["input_hashes"]) == 6 and all(len(h["sha256"]) == 64 for h in card["input_hashes"])
    assert card["build_command"].startswith("spinedart build-ssm --input")
    assert card["skipped_inputs"][0]["name"] == "phantoms/L3-9"
    rc, stdout, _ = run_cli("ssm-info", out, "--json")
    info = json.loads(stdout.strip().splitlines()[-1])
    assert info["n_members"] == 6 and info["n_modes"] == 3 and len(info["variance_explained_cumulative"]) == 3
    assert info["seed_range"] == [1, 4] and len(info["input_hashes"]) == 6 and "left_entry" in info["annotations"]
    assert sorted(info["levels"]) == ["L2", "L3"] and info["n_vertices"] == model.n_surface
    # Resume: every member and correspondence is cached; the same command gives the same bytes
    # and rewrites no cache file.
    cache = out.with_name("l23.cache")
    files = {p: p.stat().st_mtime_ns for p in cache.glob("*/*.npz")}
    assert len([p for p in files if p.parent.name == "members"]) == 6
    assert len([p for p in files if p.parent.name == "correspondences"]) == 6
    sha = card["arrays_sha256"]
    rc, _, err = run_cli(*args, "--template-spacing", "3")
    assert rc == 0, err
    assert json.loads(out.with_suffix(".json").read_text())["arrays_sha256"] == sha
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*/*.npz")} == files
    assert (cache / "members_in_correspondence.npz").is_file()  # for the quality report
    # Two processes registering the members build the same model, byte for byte (own cache: the
    # registrations really run in the workers), even when the workers' BLAS has another thread count
    # than this process's (dask had set OPENBLAS_NUM_THREADS=1 for them in CI: another model).
    from threadpoolctl import threadpool_info

    here = {d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"}
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2" if here == {1} else "1")
    par = tmp_path / "p" / "l23.npz"
    rc, _, err = run_cli(*args[:-1], par, "--template-spacing", "3", "--workers", "2")
    assert rc == 0, err
    assert len(list(par.with_name("l23.cache").glob("correspondences/*.npz"))) == 6
    assert json.loads(par.with_suffix(".json").read_text())["arrays_sha256"] == sha


def test_generated_members_are_named_hashed_and_deterministic():
    from SpineDARTLib.ssm.members import generated_sources

    a = generated_sources(["L2", "L3"], 4, 10)
    assert [s.name for s in a] == [f"generated/L{2 + i % 2}-seed{10 + i}" for i in range(4)]
    assert [s.sha256 for s in a] == [s.sha256 for s in generated_sources(["L2", "L3"], 4, 10)]
    assert len({s.sha256 for s in a}) == 4
    m = load_member(a[1])
    assert m.level == "L3" and m.annotations.shape == (14, 3)


def test_verse_label_map_and_metre_meshes(tmp_path):
    import trimesh

    _label_map(tmp_path / "verse_msk.nii.gz", VERSE, seed=11)
    found = discover(tmp_path, ["L2", "L3"], convention="verse")
    assert {s.level for s in found.sources} == {"L2", "L3"}
    ph = generate("L4", 3, 2.0)
    trimesh.Trimesh(ph.vertices / 1000.0, ph.faces).export(tmp_path / "vhp_L4.obj")
    found = discover(tmp_path, ["L2", "L3", "L4"], convention="verse", mesh_units="m")
    src = next(s for s in found.sources if s.kind == "mesh")
    assert src.level == "L4"
    m = load_member(src)
    assert np.allclose(m.vertices.max(0) - m.vertices.min(0), ph.vertices.max(0) - ph.vertices.min(0), atol=0.01)


def _open_mesh(path: Path) -> None:
    import trimesh

    ph = generate("L3", 2, 2.0)
    trimesh.Trimesh(ph.vertices, ph.faces[:-40], process=False).export(path)


@pytest.mark.parametrize(
    "setup, extra, match",
    [
        ("open", [], "not watertight"),
        ("empty_map", [], "no vertebra labels"),
        ("metres", [], "--mesh-units m"),
        ("few", ["--modes", "5"], "5 modes need 6"),
        ("outside", [], "outside --levels"),
        ("none", ["--input", "nowhere"], "input not found"),
        ("few", ["--out", "model.txt"], "must end in .npz"),
        ("few", ["--levels", "L3-L1"], "runs backwards"),
        ("few", ["--label-ids", "ts1"], "--label-ids"),
        ("corrupt", [], "does not match its vertebra.json"),
        ("few", ["--generated", "3", "--generated-seeds", "999999"], "reserved for benchmarks"),
        ("nothing", ["--input", None], "no members given"),
        ("few", ["--workers", "0"], "--workers 0 is out of range"),
    ],
)
def test_build_ssm_bad_input(tmp_path, run_cli, setup, extra, match):
    import nibabel as nib
    import trimesh

    d = tmp_path / "in"
    d.mkdir()
    if setup == "open":
        _open_mesh(d / "L3.stl")
    elif setup == "empty_map":
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), str(d / "empty_seg.nii.gz"))
    elif setup == "metres":
        ph = generate("L3", 2, 2.0)
        trimesh.Trimesh(ph.vertices / 1000.0, ph.faces).export(d / "L3.obj")
    elif setup in ("few", "corrupt"):
        _phantoms(d, "L3", [1, 2])
        if setup == "corrupt":
            (d / "L3-1" / "vertebra.vtp").write_bytes(b"not a mesh")
    elif setup == "outside":
        _phantoms(d, "L5", [1])
    args = {"--input": str(d), "--levels": "L1-L4", "--out": str(tmp_path / "m.npz"), "--modes": "1"}
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        args[k] = v if k != "--input" else (None if v is None else str(tmp_path / v))
    args = {k: v for k, v in args.items() if v is not None}
    rc, out, err = run_cli("build-ssm", *[x for kv in args.items() for x in kv])
    assert rc == 2 and out == "", err
    assert err.count("\n") == 1 and match in err and "Traceback" not in err, err
