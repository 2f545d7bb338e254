"""An offscreen picture of a plan, drawn the way Slicer shows it: the plan is loaded into an MRML
scene (slicer-core) and rendered by Slicer's displayable managers (VTK; EGL where there is no
display) — left, the fitted vertebrae and their cannulas in 3-D; right, X-ray A on its own plane
with the fitted outlines and the cannulas drawn on it. The demo writes one per case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path

BONE_RGB, FAILED_RGB = (0.93, 0.89, 0.80), (0.9, 0.45, 0.4)
BACKGROUND_RGB = (0.08, 0.09, 0.12)
OUTLINE_RGB = (0.3, 0.8, 1.0)
ON_XRAY_LINE_MM = 1.6  # on the detector plane: ~2-3 px of a 512² X-ray at 0.59 mm, thick enough to see


def _plain_markups(nodes: list[Any], diameter_mm: float) -> None:
    """No names, handles or point glyphs, and a line diameter in mm (not relative to the glyphs,
    which are hidden): a picture shows the lines themselves."""
    for node in nodes:
        d = node.GetDisplayNode()
        d.SetPointLabelsVisibility(False)
        d.SetPropertiesLabelVisibility(False)
        d.SetHandlesInteractive(False)
        d.SetGlyphScale(0.01)
        d.SetCurveLineSizeMode(d.UseLineDiameter)
        d.SetLineDiameter(diameter_mm)


def _camera_3d(report: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Behind, above and to the patient's left, so that both cannulas are seen entering their pedicles."""
    centres, ant, up = [], [], []
    for v in report["vertebrae"]:
        lm = {k: np.asarray(p) for k, p in v["landmarks_ras_mm"].items()}
        centres.append(lm["BC"] if "BC" in lm else np.mean(list(lm.values()), axis=0))
        ant.append((lm["VAP"] - lm["PWM"]) / np.linalg.norm(lm["VAP"] - lm["PWM"]))
        up.append((lm["SEC"] - lm["IEC"]) / np.linalg.norm(lm["SEC"] - lm["IEC"]))
    centre, a, u = np.mean(centres, axis=0), np.mean(ant, axis=0), np.mean(up, axis=0)
    left = np.cross(u, a)  # patient left (RAS −x) for a vertebra facing anterior
    view = -0.8 * a + 0.45 * u + 0.4 * left
    return centre + 260.0 * view / np.linalg.norm(view), centre, u


def render_plan(report_path: str | Path, xray_path: str | Path | None = None, size: int = 700) -> np.ndarray:
    """RGB image (size, 2·size, 3): the plan in 3-D beside X-ray A with the plan drawn on it. The
    X-ray is read (with its geometry sidecar) from the report's first view unless given."""
    from . import mrml, mrml_plan
    from .mrml_view import OffscreenView
    from .schemas import PLAN_REPORT_V1, load_json

    report_path = Path(report_path)
    report = load_json(report_path, PLAN_REPORT_V1)
    if not any(v["files"].get("mesh_vtp") or v["files"].get("mesh_failed_vtp") for v in report["vertebrae"]):
        raise ValueError(f"{report_path}: no mesh to draw")
    scene = mrml.new_scene()
    try:
        xray = mrml.load_xray_node(scene, xray_path or report["views"][0]["path"])
        added = mrml_plan.add_plan(scene, report_path)
        on_xray = mrml_plan.draw_on_xrays(scene, [xray], added)
        for model in added["models"].values():
            d = model.GetDisplayNode()
            d.SetColor(*(FAILED_RGB if model.GetAttribute(mrml_plan.ATTR_STATUS) == "failed" else BONE_RGB))
            d.SetOpacity(0.35)
        diameters = {(v["level"], c["side"]): c["outer_diameter_mm"]
                     for v in report["vertebrae"] for c in v["cannulas"]}  # fmt: skip
        for key, line in added["lines"].items():
            _plain_markups([line], diameters[key])
        _plain_markups(on_xray, ON_XRAY_LINE_MM)
        for node in on_xray:
            if node.IsA("vtkMRMLMarkupsClosedCurveNode"):
                node.GetDisplayNode().SetColor(*OUTLINE_RGB)
                node.GetDisplayNode().SetSelectedColor(*OUTLINE_RGB)

        three_d = OffscreenView(scene, "SpineDART3D", (size, size))
        plane = OffscreenView(scene, "SpineDARTXray", (size, size))
        try:
            for view in (three_d, plane):
                view.background(BACKGROUND_RGB)
            three_d.show_in_this_view_only([*added["models"].values(), *added["lines"].values()])
            three_d.camera(*_camera_3d(report))
            plane.show_in_this_view_only([plane.show_volume_slice(xray), *on_xray])
            w, h = mrml.projection_from_node(xray).image_size
            m = mrml.volume_matrix(xray)
            u, v = m[:3, 0], m[:3, 1]
            normal = np.cross(u, v) / np.linalg.norm(np.cross(u, v))
            centre = (m @ np.array([(w - 1) / 2, (h - 1) / 2, 0.0, 1.0]))[:3]
            # Looking along u × v with "up" = −v puts pixel (0, 0) top left, as the X-ray is read.
            plane.camera(centre - 500.0 * normal, centre, -v, parallel_scale=h * np.linalg.norm(v) / 2)
            left, right = three_d.grab(), plane.grab()
        finally:
            for view in (three_d, plane):
                view.close()
    finally:
        mrml.release_scene(scene)
    return np.concatenate([left, right], axis=1)


def write_snapshot(
    report_path: str | Path, out_png: str | Path, size: int = 700, xray_path: str | Path | None = None
) -> Path:
    """:func:`render_plan` as one PNG, written atomically."""
    from PIL import Image

    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        Image.fromarray(render_plan(report_path, xray_path, size)).save(tmp, format="PNG", optimize=True)
    return out_png
