"""X-ray readers and writers: no transposition, explicit intensity conversion, DICOM geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SpineDARTLib.geometry import CArmGeometry, from_carm
from SpineDARTLib.xray import XRay, read_xray, sidecar_dict, write_sidecar, write_xray
from SpineDARTLib.xray.dicom import write_dicom_xray


def asymmetric_xray(size=(96, 64)) -> tuple[XRay, np.ndarray]:
    """An image with one bright spot exactly where a known 3D point projects (w ≠ h on purpose)."""
    proj = from_carm(25.0, -8.0, 600.0, 1000.0, size, pixel_spacing_mm=(1.5, 1.5), detector_offset_mm=(4.0, -2.0))
    X = np.array([[18.0, -5.0, 22.0]])
    u, v = np.round(proj.project(X)[0]).astype(int)
    img = np.zeros((size[1], size[0]), np.float32)
    img[:, :10] = 0.5  # a left-edge band: any flip or transposition moves it
    img[v, u] = 3.0
    return XRay(img, proj, "calibrated", {}), X


@pytest.mark.parametrize("ext", ["png", "tif", "nii.gz", "nii", "nrrd"])
def test_write_read_round_trip_has_no_transposition(tmp_path, ext):
    xr, X = asymmetric_xray()
    path = write_xray(xr, tmp_path / f"view.{ext}")
    back = read_xray(path)
    assert back.image.shape == xr.image.shape
    tol = 3.0 / 65535 * 1.01 if ext == "png" else 0.0
    assert np.abs(back.image - xr.image).max() <= tol
    v, u = np.unravel_index(np.argmax(back.image), back.image.shape)
    assert np.allclose(back.projection.project(X)[0], [u, v], atol=0.5)
    assert back.geometry_kind == "calibrated"
    assert back.provenance["intensity"]["convention"] == "line_integral"
    assert len(back.provenance["sha256"]) == 64


def hand_geometry(alpha, beta, position, sid, sdd, du, dv, w, h):
    """Independent hand computation of source, beam and principal point for a C-arm view."""
    a, b = np.radians(alpha), np.radians(beta)
    d_table = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    flip = {"HFS": [1, 1, 1], "HFP": [-1, -1, 1], "FFS": [-1, 1, -1], "FFP": [1, -1, -1]}[position]
    d = d_table * flip
    return {
        "image_size": [w, h],
        "pixel_spacing_mm": [du, dv],
        "source_mm": (-sid * d).tolist(),
        "isocenter_distance_mm": sid,
        "detector_distance_mm": sdd,
        "principal_point_px": [(w - 1) / 2, (h - 1) / 2],
        "view_direction": d.tolist(),
    }


def _check_summary(got: dict, want: dict) -> None:
    for k, v in want.items():
        assert np.allclose(got[k], v, atol=1e-3), (k, got[k], v)


def test_inspect_dicom_worked_case(tmp_path, run_cli):
    """LAO 30 / cranial 12, prone, 0.2 x 0.25 mm detector pixels (ImagerPixelSpacing is [row, column])."""
    w, h = 120, 100
    carm = CArmGeometry(30.0, 12.0, 700.0, 1100.0, (w, h), (0.25, 0.2), patient_position="HFP")
    pix = (np.random.default_rng(0).random((h, w)) * 4000 + 100).astype(np.uint16)
    path = write_dicom_xray(tmp_path / "view.dcm", pix, carm)
    rc, out, err = run_cli("inspect", path, "--json")
    assert rc == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    _check_summary(got, hand_geometry(30, 12, "HFP", 700, 1100, 0.25, 0.2, w, h))
    assert got["geometry"] == "nominal"
    # The human-readable form says the same and names the geometry source.
    rc, out, _ = run_cli("inspect", path)
    assert rc == 0 and "nominal (DICOM tags)" in out


def test_inspect_png_sidecar_worked_case(tmp_path, run_cli):
    w, h = 80, 60
    from PIL import Image

    Image.fromarray((np.arange(w * h).reshape(h, w) % 251).astype(np.uint8)).save(tmp_path / "lat.png")
    side = {
        "schema": "spinedart.xray-geometry/1",
        "image_size": [w, h],
        "pixel_spacing_mm": [0.5, 0.5],
        "carm": {
            "primary_angle_deg": -90,
            "secondary_angle_deg": 0,
            "source_isocenter_mm": 600,
            "source_detector_mm": 1000,
        },
    }
    (tmp_path / "lat.json").write_text(json.dumps(side))
    rc, out, err = run_cli("inspect", tmp_path / "lat.png", "--json")
    assert rc == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    _check_summary(got, hand_geometry(-90, 0, "HFS", 600, 1000, 0.5, 0.5, w, h))
    assert np.allclose(got["source_mm"], [-600, 0, 0], atol=1e-6)  # RAO 90: source on the patient's left
    assert got["geometry"] == "calibrated"
    assert any("display image" in x for x in got["warnings"])  # the assumed intensity is said


def test_sidecar_overrides_dicom_and_p_form(tmp_path):
    carm = CArmGeometry(0.0, 0.0, 600.0, 1000.0, (50, 40), (0.4, 0.4))
    pix = np.full((40, 50), 1000, np.uint16)
    path = write_dicom_xray(tmp_path / "ap.dcm", pix, carm)
    calibrated = from_carm(2.0, 1.0, 605.0, 1003.0, (50, 40), pixel_spacing_mm=(0.4, 0.4))
    write_sidecar(tmp_path / "ap.json", calibrated)
    xr = read_xray(path)
    assert xr.geometry_kind == "calibrated" and np.allclose(xr.projection.P, calibrated.P)
    assert xr.provenance["geometry_source"].startswith("sidecar")
    # --geometry wins over the sidecar beside the file.
    other = from_carm(-3.0, 0.0, 600.0, 1000.0, (50, 40), pixel_spacing_mm=(0.4, 0.4))
    write_sidecar(tmp_path / "other.json", other)
    assert np.allclose(read_xray(path, tmp_path / "other.json").projection.P, other.P)


def test_dicom_pixel_spacing_fallback_and_assumed_position(tmp_path):
    carm = CArmGeometry(0.0, 0.0, 600.0, 1000.0, (30, 20), (0.3, 0.3))
    path = write_dicom_xray(
        tmp_path / "v.dcm", np.full((20, 30), 5, np.uint16), carm, imager_spacing=False, extra={"PatientPosition": None}
    )
    xr = read_xray(path)
    text = " ".join(xr.provenance["warnings"])
    assert "PixelSpacing" in text and "HFS" in text
    assert np.allclose(xr.projection.pixel_spacing_mm, (0.3, 0.3))


def _bone_contrast(xr: XRay) -> float:
    return float(xr.image[8:12, 8:12].mean() - xr.image[:4, :4].mean())


@pytest.mark.parametrize(
    ("relationship", "sign", "photometric", "bone_value", "background", "conversion"),
    [
        ("LIN", 1, "MONOCHROME2", 500, 20000, "-ln(I / I0)"),  # raw intensity: bone dark
        ("LIN", -1, "MONOCHROME1", 65035, 45535, "-ln(I / I0)"),  # inverted intensity
        ("LOG", 1, "MONOCHROME2", 1000, 9000, "identity"),  # log intensity: bone dark, negated
        ("LOG", -1, "MONOCHROME2", 9000, 1000, "identity"),  # log attenuation: bone bright
        ("DISP", 1, "MONOCHROME2", 3000, 800, "identity (display image, bone bright)"),
        ("DISP", 1, "MONOCHROME1", 800, 3000, "inverted"),
    ],
)
def test_dicom_intensity_relationships_make_bone_bright(
    tmp_path, relationship, sign, photometric, bone_value, background, conversion
):
    carm = CArmGeometry(0.0, 0.0, 600.0, 1000.0, (20, 20), (0.3, 0.3))
    pix = np.full((20, 20), background, np.uint16)
    pix[6:14, 6:14] = bone_value
    path = write_dicom_xray(
        tmp_path / "v.dcm", pix, carm, relationship=relationship, sign=sign, photometric=photometric
    )
    xr = read_xray(path)
    assert _bone_contrast(xr) > 0, xr.provenance["intensity"]
    assert xr.provenance["intensity"]["conversion"].startswith(conversion)
    assert xr.provenance["intensity"]["relationship"] == relationship
    if relationship == "LIN":
        # −ln(I/I0): the contrast is the log ratio of intensities, not their difference.
        i_bone = bone_value if sign == 1 else 65535 - bone_value
        i_bg = background if sign == 1 else 65535 - background
        assert np.isclose(_bone_contrast(xr), np.log(i_bg / i_bone), rtol=1e-4)


def test_raw_linear_png_with_i0(tmp_path):
    from PIL import Image

    proj = from_carm(0, 0, 600, 1000, (16, 16), pixel_spacing_mm=(1, 1))
    pix = np.full((16, 16), 10000, np.uint16)
    pix[5:9, 5:9] = 2500
    Image.fromarray(pix).save(tmp_path / "raw.png")
    write_sidecar(tmp_path / "raw.json", proj, intensity={"convention": "raw_linear", "i0": 20000.0})
    xr = read_xray(tmp_path / "raw.png")
    assert np.isclose(xr.image[0, 0], np.log(2.0), rtol=1e-5) and np.isclose(xr.image[6, 6], np.log(8.0), rtol=1e-5)
    assert xr.provenance["intensity"]["i0_source"] == "given"


def test_p_and_carm_together_must_agree(tmp_path):
    carm = CArmGeometry(10.0, 0.0, 600.0, 1000.0, (40, 40), (0.5, 0.5))
    d = sidecar_dict(carm.to_projection(), carm=carm)
    from SpineDARTLib.xray.sidecar import parse_sidecar

    assert np.allclose(parse_sidecar(d).projection.P, carm.to_projection().P)
    d["carm"]["primary_angle_deg"] = 14.0
    from SpineDARTLib.errors import GeometryError

    with pytest.raises(GeometryError, match="disagree"):
        parse_sidecar(d, tmp_path / "x.json")


def test_readme_sidecar_examples_are_valid():
    """The sidecar examples in the README parse, and describe the AP and lateral views they claim."""
    import re
    from pathlib import Path

    from SpineDARTLib.xray.sidecar import parse_sidecar

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, flags=re.S)]
    parsed = [parse_sidecar(b) for b in blocks if b.get("schema") == "spinedart.xray-geometry/1"]
    assert len(parsed) == 2
    ap, lat = parsed
    assert np.allclose(ap.projection.view_direction, [0, 1, 0], atol=1e-3)
    assert np.allclose(ap.projection.source_mm, [0, -620, 0], atol=0.5)
    assert np.allclose(lat.projection.view_direction, [-1, 0, 0], atol=1e-6)


def test_image_stem_and_sidecar_path():
    from SpineDARTLib.xray import image_stem, sidecar_path_for

    assert image_stem("/data/spine.nii.gz") == "spine" and image_stem("view.A.png") == "view.A"
    assert image_stem("x.DCM") == "x" and image_stem("noext") == "noext"
    assert str(sidecar_path_for("/d/scan.nii.gz")) == "/d/scan.json"
