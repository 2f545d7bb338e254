"""Running and scoring the 2D-GeoPlan baseline (``spinedart bench --method geoplan``) on one task:
the annotation network on both views, the target level's 2D cannula paths triangulated, the
trajectory errors and each cannula's true breach grade — the same scores as a fit's plan."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..geometry.perturb import Miscalibration
from ..metrics import trajectory_errors
from .accuracy import failed_record, load_views
from .sets import Task


def run_geoplan_task(
    task: Task, detector, seed: int = 0, miscalibration: Miscalibration | None = None
) -> dict[str, Any]:
    """One task's record; ``converged`` means both cannulas were triangulated (its completion).
    ``miscalibration``: triangulated with wrong geometries, as :func:`.accuracy.load_views` makes them."""
    from ..mesh_io import read_mesh
    from ..nets.auto import auto_evidence
    from ..plan import Bone, check_cannula
    from ..plan.geoplan import geoplan_cannulas

    doc, xrays, _, _ = load_views(task, miscalibration, seed)
    t0 = time.perf_counter()
    projections = [x.projection for x in xrays]
    ev = auto_evidence(detector, [x.image for x in xrays], projections, task.target)
    detected = {"anchors": ev.anchors, "found": ev.found}
    extra = {"miscalibrated": doc["miscalibrated"]} if "miscalibrated" in doc else {}
    if task.target not in ev.paths[0] or task.target not in ev.paths[1]:
        why = f"detector: {task.target} {ev.rejected.get(task.target, 'not found in either view')}"
        return failed_record(task, "geoplan", why, time.perf_counter() - t0, detector=detected, **extra)
    record: dict[str, Any] = {"task": task.key, "case": task.case_id, "level": task.target, "method": "geoplan",
                              "mesh": False, "detector": detected, **extra}  # fmt: skip
    plan: dict[str, Any] = {"status": "failed", "cannulas": [], "bipedicular_ab": False}
    cannulas, missing = geoplan_cannulas([ev.paths[0][task.target], ev.paths[1][task.target]], projections,
                                         task.target)  # fmt: skip
    record["seconds"] = time.perf_counter() - t0
    gt = next(v for v in doc["vertebrae"] if v["level"] == task.target)
    record.update(trajectory_errors({c.side: {"entry": c.entry, "target": c.target} for c in cannulas},
                                    gt["trajectories"]))  # fmt: skip
    mesh = read_mesh(task.case_dir / gt["mesh"]["path"])
    truth = Bone(mesh[0], mesh[1], {k: np.asarray(v, float) for k, v in gt["landmarks"].items()})
    for c in cannulas:
        # No bone model: nothing predicts its safety, so none is flagged safe.
        plan["cannulas"].append({"side": c.side, "safe": False, "reasons": ["2D-GeoPlan: no bone model to check"],
                                 "cannula": c.to_dict(), "true": check_cannula(truth, c).to_dict()})  # fmt: skip
    plan["status"] = "geoplan" if len(cannulas) == 2 else "failed"
    plan["bipedicular_ab"] = len(cannulas) == 2 and all(
        c["true"]["grade"] in ("A", "B") and c["true"]["tip_ok"] for c in plan["cannulas"]
    )
    record["plan"] = plan
    record["converged"] = len(cannulas) == 2
    record["reason"] = "; ".join(f"{side}: {why}" for side, why in missing.items()) or "both cannulas triangulated"
    return record
