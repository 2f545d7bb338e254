"""The demo on the bundled case.

Until the planning pipeline exists, the bundled case is a calibrated bead phantom seen in two
views, and the demo exercises the whole geometry layer: read both X-rays with their sidecars, check
the view pair, detect the beads, match them across views by epipolar geometry, triangulate them and
compare with the phantom's ground truth. It writes ``report.json`` and one overlay PNG per view.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, atomic_write_json
from .beads import detect_beads, elliptic_cylinder_line_integrals, match_beads, sphere_line_integrals
from .geometry import CArmGeometry, triangulate, view_pair_check
from .provenance import provenance
from .schemas import BEAD_PHANTOM_V1, XRAY_GEOMETRY_V1, load_json
from .xray import XRay, read_xray, write_sidecar, write_xray

# Demo acceptance: every bead found and matched, triangulated within this distance of the truth.
MAX_BEAD_ERROR_MM = 0.5
DEMO_SEED = 20261126
_BEAD_RADIUS_MM = 2.0


def _demo_views() -> tuple[CArmGeometry, CArmGeometry]:
    """Two non-orthogonal calibrated views around an off-origin isocentre, with a detector offset."""
    iso = (6.0, -12.0, 25.0)
    a = CArmGeometry(
        -4.0,
        3.0,
        620.0,
        1020.0,
        (256, 256),
        (300 / 256, 300 / 256),
        (4.0, -3.0),
        patient_position="HFS",
        isocenter_mm=iso,
    )
    b = CArmGeometry(
        72.0,
        -6.0,
        620.0,
        1020.0,
        (256, 256),
        (300 / 256, 300 / 256),
        (-2.5, 5.0),
        patient_position="HFS",
        isocenter_mm=iso,
    )
    return a, b


def build_demo_case(out_dir: str | Path, seed: int = DEMO_SEED) -> Path:
    """Write the bead-phantom demo case (deterministic for a seed): X-rays, sidecars, ground truth."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a, b = _demo_views()
    iso = np.asarray(a.isocenter_mm)
    # An asymmetric layout: no mirror or rotation of the set maps it onto itself.
    offsets = np.array(
        [[0, 0, 0], [35, 5, 10], [-20, 25, -5], [10, -30, 30], [-30, -10, -35], [25, 20, -40], [-5, 40, 45]], float
    )
    offsets += rng.uniform(-3, 3, size=offsets.shape)
    beads = [
        {
            "name": f"bead{i + 1}",
            "center_mm": (iso + o).round(3).tolist(),
            "radius_mm": _BEAD_RADIUS_MM,
            "mu_per_mm": 0.45,
        }
        for i, o in enumerate(offsets)
    ]
    body = {"center_mm": [iso[0], iso[1] + 10.0, 0.0], "semi_axes_mm": [160.0, 110.0], "mu_per_mm": 0.02}
    centers = np.array([bd["center_mm"] for bd in beads])
    for name, carm in (("xray_a", a), ("xray_b", b)):
        proj = carm.to_projection()
        img = sphere_line_integrals(proj, centers, np.full(len(beads), _BEAD_RADIUS_MM), np.full(len(beads), 0.45))
        img += elliptic_cylinder_line_integrals(proj, np.array(body["center_mm"]), tuple(body["semi_axes_mm"]), 0.02)
        # Quantum noise on the detected intensity, then back to line integrals.
        photons = rng.poisson(1.0e6 * np.exp(-img)).clip(1)
        noisy = -np.log(photons / 1.0e6)
        xr = XRay(noisy.astype(np.float32), proj, "calibrated", {})
        write_xray(xr, out / f"{name}.png", provenance={"generator": "SpineDARTLib.demo.build_demo_case", "seed": seed})
    # View B's sidecar carries the C-arm form, view A's the P form: the demo reads both.
    write_sidecar(
        out / "xray_b.json",
        b.to_projection(),
        geometry_kind="calibrated",
        intensity=load_json(out / "xray_b.json", XRAY_GEOMETRY_V1)["intensity"],
        carm=b,
        provenance={"generator": "SpineDARTLib.demo.build_demo_case", "seed": seed},
    )
    atomic_write_json(out / "phantom.json", {"schema": BEAD_PHANTOM_V1, "beads": beads, "body": body, "seed": seed})
    return out


def _overlay(xr: XRay, detected: np.ndarray, expected: np.ndarray, path: Path) -> None:
    from PIL import Image, ImageDraw

    img = xr.image
    lo, hi = np.percentile(img, [1, 99.8])
    grey = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    im = Image.fromarray(grey).convert("RGB").resize((grey.shape[1] * 2, grey.shape[0] * 2), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for u, v in expected:
        x, y = 2 * u + 1, 2 * v + 1
        draw.ellipse([x - 9, y - 9, x + 9, y + 9], outline=(0, 220, 0), width=2)
    for u, v in detected:
        x, y = 2 * u + 1, 2 * v + 1
        draw.line([x - 6, y, x + 6, y], fill=(230, 30, 30), width=2)
        draw.line([x, y - 6, x, y + 6], fill=(230, 30, 30), width=2)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def run_demo(out_dir: str | Path, case_dir: str | Path | None = None, echo: bool = True) -> dict[str, Any]:
    """Run the geometry demo; returns the report (also written to ``out_dir/report.json``)."""
    from .resources import demo_case_dir

    t0 = time.perf_counter()
    case = Path(case_dir) if case_dir is not None else demo_case_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = print if echo else (lambda *a, **k: None)

    xa, xb = read_xray(case / "xray_a.png"), read_xray(case / "xray_b.png")
    phantom = load_json(case / "phantom.json", BEAD_PHANTOM_V1)
    truth = np.array([b["center_mm"] for b in phantom["beads"]])
    angle, warning = view_pair_check(xa.projection, xb.projection)
    say(f"case {case}: two {xa.geometry_kind}/{xb.geometry_kind} views {angle:.1f} deg apart")
    if warning:
        say(f"warning: {warning}")

    radius_px = _BEAD_RADIUS_MM * 1.65 / xa.projection.pixel_spacing_mm[0]
    det_a = detect_beads(xa.image, radius_px)
    det_b = detect_beads(xb.image, radius_px)
    match = match_beads(xa.projection, xb.projection, det_a, det_b)
    # Each triangulated bead against the nearest true bead.
    d = np.linalg.norm(match.points_mm[:, None, :] - truth[None, :, :], axis=2)
    nearest = d.argmin(axis=1)
    err = d[np.arange(len(nearest)), nearest]
    found = sorted(set(nearest.tolist()))
    # Geometry check in 2D: true bead centres projected by each P vs the detections.
    exp_a, exp_b = xa.projection.project(truth), xb.projection.project(truth)
    gt_tri = triangulate([xa.projection, xb.projection], [exp_a, exp_b])
    ok = (
        len(found) == len(truth)
        and len(match.points_mm) == len(truth)
        and bool(len(err))
        and float(err.max()) <= MAX_BEAD_ERROR_MM
    )

    _overlay(xa, det_a, exp_a, out / "overlay_a.png")
    _overlay(xb, det_b, exp_b, out / "overlay_b.png")
    report = {
        "schema": "spinedart.demo-report/1",
        "kind": "geometry-demo (bead phantom; the planning demo replaces it when the pipeline lands)",
        "ok": bool(ok),
        "view_angle_deg": round(angle, 3),
        "view_angle_warning": warning,
        "views": {"a": xa.summary(), "b": xb.summary()},
        "beads_true": len(truth),
        "beads_detected": [len(det_a), len(det_b)],
        "beads_matched": len(match.points_mm),
        "bead_error_mm": {"mean": float(err.mean()), "max": float(err.max())} if len(err) else None,
        "reprojection_rms_px": float(np.sqrt(np.nanmean(match.reprojection_px**2))) if len(err) else None,
        "noise_free_triangulation_error_mm": float(np.abs(gt_tri.points_mm - truth).max()),
        "beads": [
            {
                "name": phantom["beads"][j]["name"],
                "triangulated_mm": p.round(3).tolist(),
                "error_mm": round(float(e), 4),
            }
            for p, j, e in zip(match.points_mm, nearest, err, strict=True)
        ],
        "seconds": round(time.perf_counter() - t0, 3),
        "provenance": provenance(
            inputs=[
                case / "xray_a.png",
                case / "xray_a.json",
                case / "xray_b.png",
                case / "xray_b.json",
                case / "phantom.json",
            ],
            seed=phantom.get("seed"),
        ),
    }
    atomic_write_json(out / "report.json", report)
    if len(err):
        say(f"beads: {len(truth)} true, detected {len(det_a)}/{len(det_b)}, matched {len(match.points_mm)}")
        say(
            f"3D error vs ground truth: mean {err.mean():.3f} mm, max {err.max():.3f} mm (limit {MAX_BEAD_ERROR_MM} mm)"
        )
    say(f"{'OK' if ok else 'FAILED'}: wrote {out / 'report.json'}, {out / 'overlay_a.png'}, {out / 'overlay_b.png'}")
    return report
