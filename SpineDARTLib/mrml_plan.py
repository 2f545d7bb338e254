"""A plan in the MRML scene: a subject-hierarchy folder per case, a model node per vertebra and an
editable markups line per cannula, whose safety is re-checked when the user drags it.

Everything the re-check needs rides on the nodes as attributes (so it survives ``.mrb`` save and
reload): the line knows its level, side, gauge, margin and model node; the model keeps the fitted
landmarks and the per-vertex part labels (point data ``part``). The ``slicer`` import stays in
:mod:`SpineDARTLib.mrml`; this module only talks to the scene object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from . import mrml
from .errors import UserError
from .geometry.projection import Projection
from .markups import SAFE_RGB, UNSAFE_RGB
from .plan import Bone, Cannula
from .plan.planner import assess, cannula_suggestion, vertebra_verdict
from .schemas import PLAN_REPORT_V1, load_json

ATTR_LEVEL = "SpineDART.Level"
ATTR_SIDE = "SpineDART.Side"
ATTR_GAUGE = "SpineDART.Gauge"
ATTR_MARGIN = "SpineDART.MarginMm"
ATTR_MODEL = "SpineDART.ModelNodeID"
ATTR_LANDMARKS = "SpineDART.Landmarks"
ATTR_CHECK = "SpineDART.Check"
ATTR_STATUS = "SpineDART.Status"
ATTR_FIT_REASON = "SpineDART.FitReason"
ATTR_SUGGESTION = "SpineDART.Suggestion"


def _model_node(scene: Any, vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray | None, name: str) -> Any:
    from vtk.util import numpy_support

    node = mrml.add_model_node(scene, vertices, faces, name)
    if labels is not None:
        arr = numpy_support.numpy_to_vtk(np.asarray(labels, np.int32), deep=True)
        arr.SetName("part")
        node.GetPolyData().GetPointData().AddArray(arr)
    return node


def _paint(line: Any, safe: bool) -> None:
    d = line.GetDisplayNode()
    if d is not None:
        rgb = SAFE_RGB if safe else UNSAFE_RGB
        d.SetColor(*rgb)
        d.SetSelectedColor(*rgb)


def add_plan(scene: Any, report_path: str | Path, name: str | None = None) -> dict[str, Any]:
    """Load a plan's outputs (``report.json`` and the meshes beside it) into the scene."""
    from .mesh_io import read_mesh, read_part_labels

    report_path = Path(report_path)
    report = load_json(report_path, PLAN_REPORT_V1)
    folder_dir = report_path.parent
    models: dict[str, Any] = {}
    lines: dict[tuple[str, str], Any] = {}
    for v in report["vertebrae"]:
        mesh = v["files"].get("mesh_vtp") or v["files"].get("mesh_failed_vtp")
        if not mesh:
            continue
        verts, faces = read_mesh(folder_dir / mesh)
        model = _model_node(scene, verts, faces, read_part_labels(folder_dir / mesh), f"{v['level']} ({v['status']})")
        model.SetAttribute(ATTR_LEVEL, v["level"])
        model.SetAttribute(ATTR_STATUS, v["status"])
        model.SetAttribute(ATTR_FIT_REASON, v["fit_reason"])
        model.SetAttribute(ATTR_SUGGESTION, v["suggestion"] or "")
        model.SetAttribute(ATTR_LANDMARKS, json.dumps(v["landmarks_ras_mm"]))
        models[v["level"]] = model
        for c in v["cannulas"]:
            line = mrml.add_line_node(scene, np.array(c["entry_ras_mm"]), np.array(c["target_ras_mm"]),
                                      f"{v['level']} {c['side']} {c['gauge']}G")  # fmt: skip
            attrs = {ATTR_LEVEL: v["level"], ATTR_SIDE: c["side"], ATTR_GAUGE: str(c["gauge"]),
                     ATTR_MARGIN: str(report["safety_margin_mm"]), ATTR_MODEL: model.GetID()}  # fmt: skip
            for attr, value in attrs.items():
                line.SetAttribute(attr, value)
            check = {"safe": c["safe"], "reasons": c["reasons"], "suggestion": c["suggestion"], **c["predicted"]}
            line.SetAttribute(ATTR_CHECK, json.dumps(check))
            _paint(line, c["safe"])
            lines[(v["level"], c["side"])] = line
    folder = mrml.folder_with(scene, name or f"SpineDART plan ({report_path.parent.name})",
                              [*models.values(), *lines.values()])  # fmt: skip
    return {"folder": folder, "models": models, "lines": lines, "report": report}


def _model_mesh(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(vertices RAS, triangles) of a model node made by :func:`add_plan`."""
    from vtk.util import numpy_support

    poly = model.GetPolyData()
    verts = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(float)
    return verts, numpy_support.vtk_to_numpy(poly.GetPolys().GetConnectivityArray()).reshape(-1, 3)


def _bone_of(scene: Any, line: Any) -> Bone:
    from vtk.util import numpy_support

    model = scene.GetNodeByID(line.GetAttribute(ATTR_MODEL) or "")
    if model is None or model.GetPolyData() is None:
        raise UserError(f"line '{line.GetName()}' has lost its vertebra model", "plan this vertebra again")
    verts, faces = _model_mesh(model)
    part = model.GetPolyData().GetPointData().GetArray("part")
    labels = None if part is None else numpy_support.vtk_to_numpy(part)
    landmarks = {k: np.asarray(p, float) for k, p in json.loads(model.GetAttribute(ATTR_LANDMARKS)).items()}
    return Bone(verts, faces, landmarks, labels)


def line_points(line: Any) -> tuple[np.ndarray, np.ndarray]:
    pts = []
    for i in range(2):
        p = [0.0, 0.0, 0.0]
        line.GetNthControlPointPositionWorld(i, p)
        pts.append(np.array(p))
    return pts[0], pts[1]


def recheck_line(scene: Any, line: Any, projections: list[Projection] | None = None) -> dict[str, Any]:
    """Re-check an (edited) cannula against its fitted vertebra, with the planner's own rules and
    suggestion; updates the line (check, name, colour) and its vertebra's verdict, and returns the
    check (what the results table shows)."""
    if line.GetNumberOfControlPoints() != 2:
        raise UserError(f"line '{line.GetName()}' needs an entry and a target point", "place both points")
    entry, target = line_points(line)
    c = Cannula(line.GetAttribute(ATTR_SIDE), entry, target, int(line.GetAttribute(ATTR_GAUGE)))
    bone, margin = _bone_of(scene, line), float(line.GetAttribute(ATTR_MARGIN))
    cp = assess(bone, c, projections, margin)
    check = {"safe": cp.safe, "reasons": cp.reasons, "suggestion": cannula_suggestion(bone, cp, projections, margin),
             **cp.check.to_dict(), "length_mm": round(c.length_mm, 2)}  # fmt: skip
    line.SetAttribute(ATTR_CHECK, json.dumps(check))
    base = f"{line.GetAttribute(ATTR_LEVEL)} {c.side} {c.gauge}G"
    line.SetName(base if cp.safe else f"{base} UNSAFE")
    _paint(line, cp.safe)
    _update_verdict(scene, scene.GetNodeByID(line.GetAttribute(ATTR_MODEL)))
    return check


def _cannula_lines(scene: Any) -> list[Any]:
    """Every planned cannula line of the scene (a markups line carrying a check and its model)."""
    lines = scene.GetNodesByClass("vtkMRMLMarkupsLineNode")
    return [n for n in (lines.GetItemAsObject(i) for i in range(lines.GetNumberOfItems()))
            if n.GetAttribute(ATTR_CHECK) and n.GetAttribute(ATTR_MODEL)]  # fmt: skip


def _lines_of(scene: Any, model: Any) -> list[Any]:
    return [n for n in _cannula_lines(scene) if n.GetAttribute(ATTR_MODEL) == model.GetID()]


def _update_verdict(scene: Any, model: Any) -> None:
    """A fitted vertebra's go/no-go and suggestion from its cannulas' latest checks (after an edit)."""
    if model.GetAttribute(ATTR_STATUS) == "failed":
        return
    checks = [(n.GetAttribute(ATTR_SIDE), json.loads(n.GetAttribute(ATTR_CHECK))) for n in _lines_of(scene, model)]
    status, suggestion = vertebra_verdict(model.GetAttribute(ATTR_LEVEL),
                                          [(side, c["safe"], c.get("suggestion")) for side, c in checks])  # fmt: skip
    model.SetAttribute(ATTR_STATUS, status)
    model.SetAttribute(ATTR_SUGGESTION, suggestion or "")
    model.SetName(f"{model.GetAttribute(ATTR_LEVEL)} ({status})")


def plan_lines(scene: Any) -> tuple[list[Any], int | None]:
    """Every planned cannula line in the scene (e.g. of plans restored from an .mrb, to be made
    editable again) and the folder of the newest plan (None when there is none)."""
    found = _cannula_lines(scene)
    return found, (mrml.folder_of(scene, found[-1]) if found else None)


TABLE_HEADERS = ["Level", "Verdict", "Side", "Gauge", "Safe", "Clearance (mm)", "Grade", "Suggestion", "Reasons"]


def table_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The results table's text, one row per cannula, one for a vertebra whose fit failed (columns
    as :data:`TABLE_HEADERS`); the suggestion joins the cannula's and its vertebra's."""
    out = []
    for r in rows:
        verdict = f"failed: {r['fit_reason']}" if r["verdict"] == "failed" else r["verdict"]
        advice = "; ".join(s for s in (r.get("suggestion"), r["vertebra_suggestion"]) if s)
        if r["side"] is None:
            out.append([r["level"], verdict, "", "", "", "", "", advice, ""])
            continue
        out.append([r["level"], verdict, r["side"], f"{r['gauge']} G", "yes" if r["safe"] else "NO",
                    f"{r['clearance_mm']:.1f}", r["grade"], advice, "; ".join(r["reasons"])])  # fmt: skip
    return out


def plan_table(scene: Any, folder: int) -> list[dict[str, Any]]:
    """The results of a plan folder: per cannula line its vertebra's verdict and the line's last
    check; a vertebra whose fit failed (no lines) gets a row of its own (``side`` None)."""
    rows = []
    for model in mrml.folder_children(scene, folder):
        if not (model.IsA("vtkMRMLModelNode") and model.GetAttribute(ATTR_LEVEL)):
            continue
        vertebra = {"level": model.GetAttribute(ATTR_LEVEL), "verdict": model.GetAttribute(ATTR_STATUS),
                    "fit_reason": model.GetAttribute(ATTR_FIT_REASON) or "",
                    "vertebra_suggestion": model.GetAttribute(ATTR_SUGGESTION) or None}  # fmt: skip
        lines = _lines_of(scene, model)
        rows += [{**vertebra, "side": None}] if not lines else [
            {**vertebra, "side": n.GetAttribute(ATTR_SIDE), "gauge": int(n.GetAttribute(ATTR_GAUGE)),
             **json.loads(n.GetAttribute(ATTR_CHECK))} for n in lines]  # fmt: skip
    return sorted(rows, key=lambda r: (r["level"], r["side"] or ""))


# --- landmarks placed by the user -----------------------------------------------------------------
def add_landmark_points(scene: Any, xray_node: Any, evidence: dict[str, Any], name: str) -> Any:
    """A markups point list on an X-ray's image plane, one point per 2-D landmark, labelled
    ``"<level> <landmark>"`` (how the panel names points placed by the user)."""
    import vtk

    ijk_to_ras = mrml.volume_matrix(xray_node)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for level, ev in evidence.items():
        for lm, uv in ev.landmarks.items():
            ras = ijk_to_ras @ np.array([uv[0], uv[1], 0.0, 1.0])
            i = node.AddControlPoint(vtk.vtkVector3d(*ras[:3]))
            node.SetNthControlPointLabel(i, f"{level} {lm}")
    node.CreateDefaultDisplayNodes()
    return node


def arm_point_placement(scene: Any, point_list: Any | None, xray_node: Any, level: str, landmark: str) -> Any:
    """Get ready for the user to place landmark ``landmark`` of ``level`` on an X-ray: the next point
    placed in ``point_list`` (a new list on that X-ray when None) is labelled ``"<level> <landmark>"``,
    the list is the active one and the views are in place mode. Returns the point list."""
    from .anatomy.landmarks import LANDMARKS
    from .anatomy.levels import check_level

    if xray_node is None:
        raise UserError("no X-ray to place the point on", "load both X-rays first")
    if landmark not in LANDMARKS:
        raise UserError(f"unknown landmark '{landmark}'", f"choose one of {', '.join(LANDMARKS)}")
    if not level.strip():
        raise UserError("no level given for the point", "type the level it belongs to, e.g. L2")
    label = f"{check_level(level.strip())} {landmark}"
    if point_list is None:
        point_list = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", f"{xray_node.GetName()} landmarks")
        point_list.CreateDefaultDisplayNodes()
    point_list.SetControlPointLabelFormat(label)  # Slicer names each new point by this format
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    selection.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsFiducialNode")
    selection.SetActivePlaceNodeID(point_list.GetID())
    interaction = scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    interaction.SetPlaceModePersistence(0)  # one point, then back to viewing
    interaction.SetCurrentInteractionMode(interaction.Place)
    return point_list


def landmarks_from_point_lists(xray_nodes: list[Any], point_lists: list[Any]):
    """The 2-D landmarks (``Landmarks2D``) of user-placed points: one point list per X-ray, points
    labelled ``"<level> <landmark>"`` on that X-ray's image plane."""
    from .anatomy.landmarks import LANDMARKS
    from .anatomy.levels import check_level
    from .fit.landmarks2d import Landmarks2D, VertebraEvidence

    if len(xray_nodes) != 2 or len(point_lists) != 2:
        raise UserError("landmarks need two X-rays and one point list for each", "place points on both views")
    views = []
    for k, (xn, pl) in enumerate(zip(xray_nodes, point_lists, strict=True)):
        ras_to_ijk = mrml.volume_matrix(xn, ras_to_ijk=True)
        w, h = mrml.projection_from_node(xn).image_size
        levels: dict[str, VertebraEvidence] = {}
        for i in range(pl.GetNumberOfControlPoints()):
            label = pl.GetNthControlPointLabel(i).split()
            if len(label) != 2 or label[1] not in LANDMARKS:
                raise UserError(f"point '{pl.GetNthControlPointLabel(i)}' of '{pl.GetName()}' is not named "
                                "'<level> <landmark>'", f"name it e.g. 'L2 PCL' ({', '.join(LANDMARKS)})")  # fmt: skip
            level = check_level(label[0])
            if level in levels and label[1] in levels[level].landmarks:
                raise UserError(f"'{level} {label[1]}' is placed twice on X-ray {'AB'[k]} ('{pl.GetName()}')",
                                "delete the wrong one")  # fmt: skip
            p = [0.0, 0.0, 0.0]
            pl.GetNthControlPointPositionWorld(i, p)
            u, v, depth, _ = ras_to_ijk @ np.array([*p, 1.0])
            if abs(depth) > 0.5 or not (-0.5 <= u <= w - 0.5 and -0.5 <= v <= h - 0.5):
                raise UserError(f"point '{' '.join(label)}' is not on X-ray {'AB'[k]}'s image",
                                "place it on that X-ray (its slice view)")  # fmt: skip
            levels.setdefault(level, VertebraEvidence()).landmarks[label[1]] = np.array([u, v])
        views.append(levels)
    return Landmarks2D(views, [xn.GetName() for xn in xray_nodes], "placed by the user in Slicer")


# --- a plan job from the scene ----------------------------------------------------------------------
def plan_job(
    xray_nodes: list[Any],
    job_dir: str | Path,
    out_dir: str | Path,
    levels: str = "",
    gauge: str = "",
    margin_mm: float = 1.0,
    landmarks_path: str | Path | None = None,
    masks_path: str | Path | None = None,
    point_lists: list[Any] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """A worker job (:mod:`SpineDARTLib.worker`) for the two loaded X-ray nodes: the X-rays are
    written with their geometry into ``job_dir`` (whatever they were loaded from), the landmarks come
    from a file, from point lists placed on the X-rays, or (neither given) from the detector in the
    worker. Refuses what the plan would refuse, early."""
    from .anatomy.levels import parse_levels
    from .devices import resolve_device
    from .fit.landmarks2d import read_landmarks_2d, write_landmarks_2d
    from .xray import write_xray

    if len(xray_nodes) != 2 or any(n is None for n in xray_nodes):
        raise UserError("two X-rays are needed", "load X-ray A and X-ray B first")
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    xrays = []
    for k, node in enumerate(xray_nodes):
        path = job_dir / f"xray_{'ab'[k]}.tif"
        write_xray(mrml.xray_from_node(node), path, provenance={"from_node": node.GetName()})
        xrays.append(str(path))
    if point_lists is not None:
        lm_path = write_landmarks_2d(landmarks_from_point_lists(xray_nodes, point_lists), job_dir / "landmarks.json")
    elif landmarks_path:
        lm_path = Path(landmarks_path)
        read_landmarks_2d(lm_path, n_views=2)  # refused here rather than in the worker
    else:
        lm_path = None  # automatic: the worker runs the detector (and says so when none is installed)
    gauge_value = None if gauge in ("", "by level") else int(gauge)
    resolve_device(device)  # a GPU asked for where there is none: refused here, not in the worker
    return {
        "xrays": xrays,
        "landmarks": str(lm_path) if lm_path else None,
        "masks": str(masks_path) if masks_path else None,
        "levels": parse_levels(levels) if levels.strip() else None,
        "gauge": gauge_value,
        "margin_mm": float(margin_mm),
        "device": device,
        "out": str(out_dir),
    }


# --- the plan drawn on the X-rays ---------------------------------------------------------------------
def _on_image(xray_node: Any, uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates (u, v) → RAS points on the X-ray's image plane (as shown in its slice view)."""
    m = mrml.volume_matrix(xray_node)
    uvw = np.c_[uv, np.zeros(len(uv)), np.ones(len(uv))]
    return (uvw @ m.T)[:, :3]


def draw_on_xrays(scene: Any, xray_nodes: list[Any], added: dict[str, Any]) -> list[Any]:
    """The fitted outlines (closed markups curves) and the cannulas (markups lines, coloured by
    safety) of a plan on each X-ray's image plane, so they show in slice views reformatted to the
    X-rays; put into the plan's folder. Returns the new nodes."""
    import vtk
    from skimage.measure import find_contours

    from .overlay import silhouette

    nodes = []
    for k, xn in enumerate(xray_nodes):
        p = mrml.projection_from_node(xn)
        w, h = p.image_size
        for level, model in added["models"].items():
            verts, faces = _model_mesh(model)
            contours = find_contours(silhouette(p, verts, faces, (w, h), 1).astype(float), 0.5)
            if not contours:
                continue
            rc = max(contours, key=len)[::2]  # (row, col), every other point is plenty
            curve = scene.AddNewNodeByClass("vtkMRMLMarkupsClosedCurveNode", f"{level} outline {'AB'[k]}")
            for ras in _on_image(xn, rc[:, ::-1]):
                curve.AddControlPoint(vtk.vtkVector3d(*ras))
            curve.CreateDefaultDisplayNodes()
            curve.GetDisplayNode().SetPointLabelsVisibility(False)
            curve.GetDisplayNode().SetGlyphScale(0.5)
            curve.SetLocked(True)
            nodes.append(curve)
        for (level, side), line in added["lines"].items():
            entry, target = line_points(line)
            a, b = _on_image(xn, p.project(np.stack([entry, target])))
            proj = mrml.add_line_node(scene, a, b, f"{level} {side} on {'AB'[k]}")
            proj.SetLocked(True)
            _paint(proj, json.loads(line.GetAttribute(ATTR_CHECK))["safe"])
            nodes.append(proj)
    if nodes:
        mrml.folder_with(scene, "on the X-rays", nodes, parent=added["folder"])
    return nodes
