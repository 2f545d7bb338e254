"""An offscreen picture of a plan (VTK; EGL where there is no display): the fitted vertebrae and
their cannulas in 3D, beside the plan's overlay on X-ray A. The demo writes one per case."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .markups import SAFE_RGB, UNSAFE_RGB
from .mesh_io import read_mesh

BONE_RGB, FAILED_RGB = (0.93, 0.89, 0.80), (0.9, 0.45, 0.4)


def _actor(poly, rgb, opacity=1.0):
    import vtk

    mapper = vtk.vtkPolyDataMapper()
    mapper.SetInputData(poly)
    actor = vtk.vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*rgb)
    actor.GetProperty().SetOpacity(opacity)
    return actor


def _tube(entry, target, radius_mm: float):
    import vtk

    line = vtk.vtkLineSource()
    line.SetPoint1(*map(float, entry))
    line.SetPoint2(*map(float, target))
    tube = vtk.vtkTubeFilter()
    tube.SetInputConnection(line.GetOutputPort())
    tube.SetRadius(radius_mm)
    tube.SetNumberOfSides(24)
    tube.CappingOn()
    tube.Update()
    return tube.GetOutput()


def render_3d(report_path: str | Path, size: tuple[int, int] = (700, 700)) -> np.ndarray:
    """RGB image (H, W, 3) of the plan's meshes (translucent) and cannulas, seen from behind,
    above and to the patient's left, so that both cannulas are seen entering their pedicles."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import vtk
    from vtk.util import numpy_support

    from .meshing import polydata

    report_path = Path(report_path)
    report = json.loads(report_path.read_text())
    ren = vtk.vtkRenderer()
    ren.SetBackground(0.08, 0.09, 0.12)
    centres, frames = [], []
    for v in report["vertebrae"]:
        mesh = v["files"].get("mesh_vtp") or v["files"].get("mesh_failed_vtp")
        if not mesh:
            continue
        verts, faces = read_mesh(report_path.parent / mesh)
        failed = v["status"] == "failed"
        ren.AddActor(_actor(polydata(verts, faces), FAILED_RGB if failed else BONE_RGB, 0.35))
        centres.append(verts.mean(0))
        lm = {k: np.asarray(p) for k, p in v["landmarks_ras_mm"].items()}
        frames.append((lm["VAP"] - lm["PWM"], lm["SEC"] - lm["IEC"]))
        for c in v["cannulas"]:
            tube = _tube(c["entry_ras_mm"], c["target_ras_mm"], c["outer_diameter_mm"] / 2)
            ren.AddActor(_actor(tube, SAFE_RGB if c["safe"] else UNSAFE_RGB))
    if not centres:
        raise ValueError("no mesh to draw")
    centre = np.mean(centres, axis=0)
    ant = np.mean([f[0] / np.linalg.norm(f[0]) for f in frames], axis=0)
    up = np.mean([f[1] / np.linalg.norm(f[1]) for f in frames], axis=0)
    left = np.cross(up, ant)  # patient left (RAS −x) for a vertebra facing anterior
    view = -0.8 * ant + 0.45 * up + 0.4 * left
    cam = ren.GetActiveCamera()
    cam.SetFocalPoint(*centre)
    cam.SetPosition(*(centre + 260.0 * view / np.linalg.norm(view)))
    cam.SetViewUp(*up)
    ren.ResetCameraClippingRange()
    light = vtk.vtkLight()
    light.SetLightTypeToHeadlight()
    ren.AddLight(light)
    win = vtk.vtkRenderWindow()
    win.SetOffScreenRendering(1)
    win.AddRenderer(ren)
    win.SetSize(*size)
    win.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(win)
    grab.ReadFrontBufferOff()
    grab.Update()
    img = grab.GetOutput()
    w, h, _ = img.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]
    win.Finalize()
    return np.ascontiguousarray(rgb[::-1])  # VTK's rows go bottom-up


def write_snapshot(report_path: str | Path, out_png: str | Path, size: int = 700) -> Path:
    """The 3-D view beside the plan's ``overlay_a.png``, as one PNG, written atomically."""
    from PIL import Image

    report_path = Path(report_path)
    left = Image.fromarray(render_3d(report_path, (size, size)))
    overlay = Image.open(report_path.parent / "overlay_a.png").convert("RGB").resize((size, size), Image.LANCZOS)
    both = Image.new("RGB", (2 * size, size))
    both.paste(left, (0, 0))
    both.paste(overlay, (size, 0))
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        both.save(tmp, format="PNG", optimize=True)
    return out_png
