"""The planning pipeline behind ``spinedart plan``, the demo and the Slicer module:
two calibrated X-rays + 2-D evidence → initialise → fit (all requested levels jointly) → plan →
export (meshes, markups, ``report.json``, overlays).

The 2-D evidence comes from a landmarks file (``spinedart.landmarks-2d/1``) and, optionally, instance
masks (``view<i>_<level>`` arrays in an ``.npz``), or, without a landmarks file, from the annotation
network (:mod:`.nets.annotator`: detector weights given or shipped, and its second stage where one is).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .anatomy.landmarks import LANDMARKS as LANDMARK_NAMES
from .anatomy.levels import LEVELS
from .atomic import atomic_write_json
from .devices import resolve_device
from .errors import UserError
from .fit.terms import DEFAULT_LOSS, loss_terms
from .geometry.multiview import view_pair_check
from .plan import SAFETY_MARGIN_MM, Bone, VertebraPlan, plan_vertebra
from .plan.cannula import check_gauge
from .provenance import provenance
from .schemas import PLAN_REPORT_V1, validate

Progress = Callable[[float, str], None]


@dataclass
class PlanRequest:
    xrays: list[Path]
    landmarks: Path | None
    masks: Path | None = None
    geometries: list[Path | None] | None = None
    levels: list[str] | None = None
    gauge: int | None = None
    margin_mm: float = SAFETY_MARGIN_MM
    seed: int = 0
    detector: Path | None = None  # weights for automatic evidence (default: the shipped ones)
    device: str = "auto"  # auto, cpu or gpu (devices.resolve_device)
    loss: str = DEFAULT_LOSS  # the fit's image terms (fit.terms)
    similarity: Path | None = None  # learned similarity weights (default: the shipped ones)
    refiner: Path | None = None  # the detector's second stage (default: the shipped one where installed)


def _levels(req: PlanRequest, evidence_views: list[dict[str, Any]]) -> list[str]:
    """Requested levels, or every level with evidence in both views; refused when one has none."""
    both = [lv for lv in LEVELS if all(lv in v for v in evidence_views)]
    if req.levels is None:
        if not both:
            raise UserError("no vertebra is marked in both views", "mark each vertebra in both views", req.landmarks)
        return both
    missing = [lv for lv in req.levels if lv not in both]
    if missing:
        raise UserError(
            f"{', '.join(missing)} not marked in both views",
            f"choose --levels among {', '.join(both) or 'none'}, or add them to the landmarks file",
            req.landmarks,
        )
    return list(req.levels)


def _sidecars(xrays) -> list[Path]:
    """The geometry files the X-rays were read with (hashed into the provenance: they are inputs)."""
    out = []
    for x in xrays:
        src = str(x.provenance.get("geometry_source", ""))
        if src.startswith("sidecar "):
            out.append(Path(src.removeprefix("sidecar ")))
    return out


def _similarity_sha(cfg) -> dict[str, str]:
    """The learned similarity's weights hash, where the fit used it (provenance)."""
    if cfg.method != "fit" or "learned" not in loss_terms(cfg.loss):
        return {}
    from .fit.learned import load_network

    return {"similarity": load_network(cfg.similarity)[1]["weights_sha256"]}


def _detect(req: PlanRequest, xrays, device: str) -> dict[str, Any]:
    """Automatic evidence: the annotation network on both views, matched across them."""
    from .nets.annotator import load_annotator
    from .nets.auto import auto_evidence

    fix = "add --landmarks FILE (2-D landmarks of both views, e.g. placed in Slicer), or give --detector FILE"
    annotator = load_annotator(req.detector, req.refiner, fix).to(device)
    target = req.levels[0] if req.levels else None
    ev = auto_evidence(annotator, [x.image for x in xrays], [x.projection for x in xrays], target)
    for i, (found, path) in enumerate(zip(ev.found, req.xrays, strict=True)):
        if not found:
            raise UserError(f"the detector found no vertebra in view {i + 1}", "add --landmarks FILE", path)
    if not ev.landmarks.views[0]:
        why = "; ".join(f"{lv}: {r}" for lv, r in ev.rejected.items())
        raise UserError(f"no vertebra was found consistently in both views ({why})", "add --landmarks FILE")
    summary = {"weights": annotator.files["detector"], "weights_sha256": annotator.versions["detector"],
               "refiner": annotator.files["refiner"], "refiner_sha256": annotator.versions["refiner"],
               "anchors": ev.anchors, "found": ev.found, "rejected": ev.rejected}  # fmt: skip
    return {"evidence": ev, "summary": summary}


def run_plan(req: PlanRequest, out: Path, progress: Progress | None = None, fit_config=None) -> dict[str, Any]:
    """Plan every requested vertebra and write the outputs into ``out``; returns the report."""
    from .fit import initialise
    from .fit.landmarks2d import read_landmarks_2d
    from .fit.masks2d import read_instance_masks
    from .fit.optimise import FitConfig, FitTarget, FitView, fit
    from .ssm.io import model_for_level
    from .xray import read_xray

    say = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if len(req.xrays) != 2:
        raise UserError(f"{len(req.xrays)} X-ray(s) given", "give two views: --xray A --xray B")
    if req.gauge is not None:
        check_gauge(req.gauge)
    if not (0.0 <= req.margin_mm <= 5.0):
        raise UserError(f"safety margin {req.margin_mm} mm is out of range", "give 0-5 mm")
    # No progress output before the inputs are read and every level initialised: a bad input
    # then ends in exactly one line.
    geoms = req.geometries or [None, None]
    xrays = [read_xray(p, g) for p, g in zip(req.xrays, geoms, strict=True)]
    projections = [x.projection for x in xrays]
    angle, angle_warning = view_pair_check(*projections)
    device = resolve_device(req.device)
    detected = None
    if req.landmarks is None:
        detected = _detect(req, xrays, device)
        lm, masks = detected["evidence"].landmarks, detected["evidence"].masks
    else:
        lm = read_landmarks_2d(req.landmarks, n_views=2)
        masks = [{}, {}]
    if req.masks:
        masks = read_instance_masks(req.masks, [x.projection.image_size for x in xrays])
    levels = _levels(req, lm.views)
    timings["read_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    targets = []
    for level in levels:
        model = model_for_level(level)
        evidence = lm.for_level(level)
        try:
            init = initialise(model, level, projections, evidence)
        except UserError as exc:
            raise UserError(f"{level}: {exc.problem}", exc.fix or "mark more landmarks of it", req.landmarks) from None
        targets.append(FitTarget(level, model, init, evidence, [m.get(level) for m in masks]))
    timings["init_s"] = time.perf_counter() - t

    say(0.1, f"read 2 X-rays, initialised {', '.join(levels)}; fitting them jointly on both views")
    t = time.perf_counter()
    similarity = str(req.similarity) if req.similarity else None
    cfg = fit_config or FitConfig(seed=req.seed, device=device, loss=req.loss, similarity=similarity)
    views = [FitView(x.projection, x.image) for x in xrays]
    results = fit(targets, views, cfg, progress=lambda f, m: say(0.15 + 0.6 * f, f"fitting: {m}"))
    timings["fit_s"] = time.perf_counter() - t

    plans: list[VertebraPlan] = []
    t = time.perf_counter()
    fitted = []
    for k, (tgt, res) in enumerate(zip(targets, results, strict=True)):
        say(0.75 + 0.1 * k / len(levels), f"planning {tgt.level}")
        pts = res.points(tgt.model)
        ann = tgt.model.annotations(pts)
        bone = Bone(tgt.model.surface(pts), tgt.model.faces, ann, tgt.model.part_labels)
        plans.append(plan_vertebra(tgt.level, bone, ann, res.converged, res.reason, projections, req.gauge,
                                   req.margin_mm))  # fmt: skip
        fitted.append((bone, ann))
    timings["plan_s"] = time.perf_counter() - t

    say(0.88, "writing meshes, markups, overlays and the report")
    t = time.perf_counter()
    from .export import write_outputs

    files = write_outputs(out, xrays, lm, targets, fitted, plans)
    timings["export_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    from .anatomy.levels import region_of

    models = {f"ssm {region_of(t.level)}": t.model.card.get("arrays_sha256", "") for t in targets}
    report = {
        "schema": PLAN_REPORT_V1,
        "ok": all(p.status == "go" for p in plans),
        "summary": {p.level: p.status for p in plans},
        "views": [
            {"path": str(p), **x.projection.summary(), "geometry": x.geometry_kind}
            for p, x in zip(req.xrays, xrays, strict=True)
        ],
        "view_angle_deg": round(float(angle), 2),
        "view_angle_warning": angle_warning,
        "evidence": {
            "landmarks": str(req.landmarks) if req.landmarks else "detector",
            "masks": str(req.masks) if req.masks else ("detector" if detected else None),
            **({"detector": detected["summary"]} if detected else {}),
        },
        "safety_margin_mm": req.margin_mm,
        "device": cfg.device,
        "vertebrae": [
            {
                **p.to_dict(),
                "fit": r.to_dict(),
                "init": tg.init.to_dict(),
                "files": files["vertebrae"].get(p.level, {}),
                # The fitted landmarks: what an edited cannula is re-checked against (frame, tip depth).
                "landmarks_ras_mm": {k: [round(float(x), 3) for x in fitted[i][1][k]] for k in LANDMARK_NAMES},
            }
            for i, (p, r, tg) in enumerate(zip(plans, results, targets, strict=True))
        ],
        "files": {"overlays": files["overlays"]},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "provenance": provenance(
            inputs=[*req.xrays, *_sidecars(xrays), *[p for p in (req.landmarks, req.masks) if p]],
            seed=req.seed,
            models={
                **models,
                **({"detector": detected["summary"]["weights_sha256"]} if detected else {}),
                **({"refiner": detected["summary"]["refiner_sha256"]} if detected else {}),
                **_similarity_sha(cfg),
            },
        ),
    }
    validate(report, PLAN_REPORT_V1, out / "report.json")
    atomic_write_json(out / "report.json", report)
    say(1.0, "done")
    return report


def progress_bar(fraction: float, message: str) -> None:
    """A one-line text progress bar on stderr."""
    n = int(round(30 * min(max(fraction, 0.0), 1.0)))
    bar = f"[{'#' * n}{'.' * (30 - n)}] {100 * fraction:3.0f}% {message}"
    if sys.stderr.isatty():  # redraw one line; a log file gets one line per step
        print(f"\r{bar:<90}", end="\n" if fraction >= 1.0 else "", file=sys.stderr, flush=True)
    else:
        print(bar, file=sys.stderr, flush=True)


def format_table(report: dict[str, Any]) -> str:
    """The per-vertebra summary a clinician reads first."""
    rows = [f"{'level':<6}{'fit':<10}{'plan':<7}{'gauge':<7}{'left clear.':<13}{'right clear.':<13}flags"]
    for v in report["vertebrae"]:
        cells = {}
        for c in v["cannulas"]:
            p = c["predicted"]
            cells[c["side"]] = f"{p['clearance_mm']:.1f} mm {p['grade']}{'' if c['safe'] else ' !'}"
        flags = "; ".join(r for c in v["cannulas"] for r in c["reasons"])
        if v["status"] == "failed":
            flags = v["fit_reason"]
        fit_word = "ok" if v["fit"]["converged"] else "FAILED"
        rows.append(
            f"{v['level']:<6}{fit_word:<10}{v['status']:<7}{str(v['gauge']) + ' G':<7}"
            f"{cells.get('left', '-'):<13}{cells.get('right', '-'):<13}{flags}"
        )
        if v["suggestion"]:
            rows.append(f"{'':<6}suggestion: {v['suggestion']}")
    return "\n".join(rows)
