"""Running and scoring one benchmark fit (protocol p1): evidence, initialisation, fit, metrics.

The target and its neighbours (±1 level, whole, with a shape model and evidence in both views) are
fitted jointly; only the target is scored. Every attempt is a record, a failed one included.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..anatomy.levels import LEVELS
from ..errors import UserError
from ..fit.evidence import gt_noisy_view
from ..fit.init import initialise
from ..fit.landmarks2d import VertebraEvidence
from ..fit.optimise import FitConfig, FitTarget, FitView, fit
from ..fit.terms import bench_method_loss
from ..geometry.perturb import Miscalibration, perturb_projection
from ..metrics import surface_metrics, trajectory_errors
from .sets import Task

NEIGHBOURS = 1  # levels on each side fitted jointly with the target


def model_for(level: str):
    from ..ssm.io import model_for_level

    return model_for_level(level)


def _trajectories(ann: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    return {s: {"entry": ann[f"{s}_entry"], "target": ann[f"{s}_target"]} for s in ("left", "right")}


def _scores(model, points: np.ndarray, gt_mesh, gt_traj, seed: int) -> dict[str, float]:
    pred = (model.surface(points), model.faces)
    out = surface_metrics(pred, gt_mesh, seed=seed)
    out.update(trajectory_errors(_trajectories(model.annotations(points)), gt_traj))
    return out


def load_views(
    task: Task, miscalibration: Miscalibration | None = None, seed: int = 0
) -> tuple[dict[str, Any], list[Any], list[dict[str, Any]], list[np.ndarray]]:
    """(case document, X-rays, view-label documents, GT masks) of a task's two views. With a
    ``miscalibration``, each X-ray carries a wrong geometry (the robustness study): its directions
    drawn from (seed, task), the same for every magnitude; what was applied is in ``doc["miscalibrated"]``."""
    import dataclasses

    from ..synth.case import read_masks
    from ..xray import read_xray

    doc = json.loads((task.case_dir / "case.json").read_text())
    entries = {v["name"]: v for v in doc["views"]}
    xrays, labels, masks = [], [], []
    for name in task.views:
        e = entries[name]
        xrays.append(read_xray(task.case_dir / (e["degraded_image"] if task.degraded else e["image"])))
        labels.append(json.loads((task.case_dir / e["labels"]).read_text()))
        masks.append(read_masks(task.case_dir / e["masks"]))
    if miscalibration is not None and not miscalibration.is_zero:
        rng = np.random.default_rng([seed, zlib.crc32(task.key.encode()), 31])
        applied = []
        for k, x in enumerate(xrays):
            wrong, how = perturb_projection(x.projection, miscalibration, rng)
            xrays[k] = dataclasses.replace(x, projection=wrong)
            applied.append(how)
        doc["miscalibrated"] = applied
    return doc, xrays, labels, masks


def failed_record(task: Task, method: str, reason: str, seconds: float = 0.0, **extra: Any) -> dict[str, Any]:
    """The record of a task that produced no mesh (counted with Dice 0 and no plan)."""
    return {"task": task.key, "case": task.case_id, "level": task.target, "method": method, **extra,
            "converged": False, "reason": reason, "mesh": False, "seconds": seconds,
            "plan": {"status": "failed", "cannulas": [], "bipedicular_ab": False}}  # fmt: skip


def run_task(
    task: Task,
    method: str,
    seed: int,
    cfg: FitConfig | None = None,
    neighbours: int = NEIGHBOURS,
    detector=None,
    miscalibration: Miscalibration | None = None,
) -> dict[str, Any]:
    """Fit and score one task; returns its record (metrics of the target, verdict, timings).
    ``neighbours``: levels on each side fitted jointly with the target. ``detector``: the loaded
    annotation network (:class:`..nets.annotator.Annotator`) for ``--init auto`` (evidence found in
    the images, the target level as the anchor); None: the ``gt-noisy`` oracle evidence.
    ``miscalibration``: the fit is handed wrong geometries (:func:`load_views`), scored against the
    truth."""
    from ..mesh_io import read_mesh

    t_load = time.perf_counter()
    doc, xrays, labels, masks = load_views(task, miscalibration, seed)
    # The plan's time: reading the X-rays, initialisation and fit (not the oracle's evidence, not scoring).
    t_load = time.perf_counter() - t_load
    rng = np.random.default_rng([seed, zlib.crc32(task.key.encode())])
    if detector is None:
        noisy = [
            gt_noisy_view(lab, m, float(np.mean(x.projection.pixel_spacing_mm)), rng)
            for lab, m, x in zip(labels, masks, xrays, strict=True)
        ]
        evidence_of = [n.evidence for n in noisy]
        masks_of = [n.masks for n in noisy]
        detected = None
    else:
        from ..nets.auto import auto_evidence

        t_det = time.perf_counter()
        ev = auto_evidence(detector, [x.image for x in xrays], [x.projection for x in xrays], task.target)
        t_load += time.perf_counter() - t_det  # detection is part of the plan's time
        evidence_of, masks_of = ev.landmarks.views, ev.masks
        detected = {"anchors": ev.anchors, "found": ev.found, "rejected": ev.rejected}
    verts = {v["level"]: v for v in doc["vertebrae"]}
    gt = verts[task.target]
    gt_mesh = read_mesh(task.case_dir / gt["mesh"]["path"])
    gt_mesh = (gt_mesh[0], gt_mesh[1])
    found = {"detector": detected} if detected is not None else {}
    if "miscalibrated" in doc:
        found["miscalibrated"] = doc["miscalibrated"]
    record: dict[str, Any] = {"task": task.key, "case": task.case_id, "level": task.target, "method": method, **found}
    t0 = time.perf_counter() - t_load
    if detected is not None and task.target not in evidence_of[0]:
        why = f"detector: {task.target} {ev.rejected.get(task.target, 'not found in either view')}"
        return failed_record(task, method, why, time.perf_counter() - t0, **found)
    i = LEVELS.index(task.target)
    wanted = [task.target] + [lv for lv in LEVELS[max(i - neighbours, 0) : i + neighbours + 1] if lv != task.target]
    projections = [x.projection for x in xrays]
    targets: list[FitTarget] = []
    for level in wanted:
        v = verts.get(level)
        if v is None or v.get("truncated"):
            continue
        model = model_for(level)
        evidence = [e.get(level, VertebraEvidence()) for e in evidence_of]
        try:
            init = initialise(model, level, projections, evidence)
        except UserError as exc:
            if level == task.target:
                why = f"initialisation failed: {exc.problem}"
                return failed_record(task, method, why, time.perf_counter() - t0, **found)
            continue
        targets.append(FitTarget(level, model, init, evidence, [m.get(level) for m in masks_of]))
    if cfg is None:
        kind, loss = bench_method_loss(method)
        cfg = FitConfig(method=kind, seed=seed, **({"loss": loss} if loss else {}))
    views = [FitView(x.projection, x.image) for x in xrays]
    results = fit(targets, views, cfg, primary=[0])
    seconds = time.perf_counter() - t0
    res, tgt = results[0], targets[0]
    model = tgt.model
    record.update(
        converged=res.converged,
        reason=res.reason,
        checks=res.checks,
        mesh=True,
        init=tgt.init.to_dict(),
        fitted_levels=[t.level for t in targets],
        iterations=res.iterations,
        seconds=seconds,
    )
    init_points = model.instance(tgt.init.coeffs, tgt.init.rotvec, tgt.init.translation)
    record["init_scores"] = _scores(model, init_points, gt_mesh, gt["trajectories"], seed)
    points = res.points(model)
    record.update(_scores(model, points, gt_mesh, gt["trajectories"], seed))
    record["fit"] = res.to_dict()
    t_plan = time.perf_counter()
    record["plan"] = plan_record(task.target, model, points, res.converged, res.reason, projections, gt_mesh, gt)
    record["seconds"] += time.perf_counter() - t_plan  # the plan is part of the time per vertebra
    return record


def plan_record(level: str, model, points, converged: bool, reason: str, projections, gt_mesh, gt) -> dict[str, Any]:
    """The planner on the fitted instance, each cannula then graded against the true vertebra."""
    from ..plan import Bone, check_cannula, plan_vertebra

    ann = model.annotations(points)
    fitted = Bone(model.surface(points), model.faces, ann, model.part_labels) if converged else None
    vp = plan_vertebra(level, fitted, ann, converged, reason, projections)
    out: dict[str, Any] = {"status": vp.status, "gauge": vp.gauge, "suggestion": vp.suggestion, "cannulas": []}
    if vp.cannulas:
        truth = Bone(gt_mesh[0], gt_mesh[1], {k: np.asarray(v, float) for k, v in gt["landmarks"].items()})
        for cp in vp.cannulas:
            true = check_cannula(truth, cp.cannula)
            out["cannulas"].append(
                {
                    "side": cp.cannula.side,
                    "safe": cp.safe,
                    "reasons": cp.reasons,
                    "predicted": cp.check.to_dict(),
                    "true": true.to_dict(),
                }  # fmt: skip
            )
    out["bipedicular_ab"] = len(out["cannulas"]) == 2 and all(
        c["true"]["grade"] in ("A", "B") and c["true"]["tip_ok"] for c in out["cannulas"]
    )
    return out


def gt_ceiling(case_dir: Path, level: str) -> float:
    """The GT ceiling Dice of a real case's vertebra (its label against its own GT surface)."""
    from ..labelmaps import read_label_map
    from ..meshing import crop_to_mask
    from ..metrics import gt_ceiling_dice

    doc = json.loads((case_dir / "case.json").read_text())
    v = next(v for v in doc["vertebrae"] if v["level"] == level)
    labels, A = read_label_map(case_dir / "labels.nii.gz")
    crop, Ac = crop_to_mask(labels == v["label_id"], A)
    return gt_ceiling_dice(crop, Ac)


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record (a line of JSON) and flush it: an interrupted benchmark resumes from here."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")
        f.flush()


def read_records(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut by an interruption
            out[(r["task"], r["method"])] = r
    return out
