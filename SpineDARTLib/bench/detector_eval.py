"""Evaluation of the annotation network on data-engine views (synthetic or real-CT DRRs).

Per view: detections matched one-to-one to the true vertebrae (visible ones, BC in the image) by
centre distance (nearest pairs first, within ``MATCH_MM`` at the detector); instance recall and
precision; per matched vertebra the 10 landmarks' errors (mm at the detector) with their
confidences — the error against the fraction kept by a confidence threshold is the paper's Fig. 5 —
the mask Dice (probability > 0.5) and whether the level is right without an anchor (ribs or the
level head's guess) and with the clinician's target level as the anchor. With a ``refiner`` (the
second stage, :func:`..nets.detect.refine`) every detection is refined before it is scored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..anatomy.landmarks import LANDMARKS
from ..nets.detect import CENTRE_THRESHOLD, detect, order_and_levels, refine
from ..nets.detector_data import MIN_MASK_PIXELS, case_dirs, is_validation

MATCH_MM = 15.0
KEEP_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def _truth(case_dir: Path, view: dict) -> tuple[list[dict], np.ndarray]:
    from ..synth.case import read_masks

    labels = json.loads((case_dir / view["labels"]).read_text())
    masks = read_masks(case_dir / view["masks"])
    keep = [i for i in labels["instances"] if i["mask_pixels"] >= MIN_MASK_PIXELS and i["landmarks"]["BC"]["in_fov"]]
    return keep, masks


def evaluate_view(
    model, case_dir: Path, view: dict, degraded: bool, target: str | None, refiner=None,
    centre_threshold: float = CENTRE_THRESHOLD,
) -> dict[str, Any]:  # fmt: skip
    from ..xray import read_xray

    xr = read_xray(case_dir / (view["degraded_image"] if degraded else view["image"]), case_dir / view["sidecar"])
    mm = float(np.mean(xr.projection.pixel_spacing_mm))
    truth, masks = _truth(case_dir, view)
    found = detect(model, xr.image, centre_threshold)
    if refiner is not None:
        refine(refiner, xr.image, mm, found)
    rec: dict[str, Any] = {"case": case_dir.name, "view": view["name"], "degraded": degraded,
                           "n_true": len(truth), "n_found": len(found), "matched": [],
                           "detections": [[round(f.score, 4), False] for f in found]}  # fmt: skip
    if not truth or not found:
        return rec
    d = (
        np.linalg.norm(
            np.array([t["landmarks"]["BC"]["uv"] for t in truth])[:, None, :]
            - np.array([f.centre for f in found])[None],
            axis=-1,
        )
        * mm
    )
    # For the precision-recall curve: detections in score order, each the nearest free true
    # vertebra within MATCH_MM (what any higher threshold would have kept matches the same way).
    free = set(range(len(truth)))
    for fi in sorted(range(len(found)), key=lambda i: -found[i].score):
        near = [(d[ti, fi], ti) for ti in free if d[ti, fi] <= MATCH_MM]
        if near:
            free.discard(min(near)[1])
            rec["detections"][fi][1] = True
    pairs, used_t, used_f = [], set(), set()
    for flat in np.argsort(d, axis=None):
        ti, fi = divmod(int(flat), len(found))
        if d[ti, fi] > MATCH_MM:
            break
        if ti not in used_t and fi not in used_f:
            used_t.add(ti)
            used_f.add(fi)
            pairs.append((ti, fi))
    levels = {}
    for anchor in ("none", "target"):
        used = order_and_levels(found, xr.image.shape, target if anchor == "target" else None)
        levels[anchor] = (used, [f.level for f in found])
    for ti, fi in pairs:
        t, f = truth[ti], found[fi]
        errs, confs = [], []
        for n in LANDMARKS:
            if t["landmarks"][n]["in_fov"]:
                errs.append(float(np.linalg.norm(np.array(t["landmarks"][n]["uv"]) - f.landmarks[n]) * mm))
                confs.append(f.confidence[n])
        path_errs = [
            float(np.linalg.norm(np.array(pt["uv"]) - f.paths[side][name]) * mm)
            for side, sp in (t.get("trajectories") or {}).items()
            for name, pt in sp.items()
            if name in ("entry", "target") and pt["in_fov"] and side in f.paths
        ]
        gt_mask = masks[t["mask_index"]]
        pred = f.mask > 0.5
        dice = 2 * float((pred & gt_mask).sum()) / max(1.0, float(pred.sum() + gt_mask.sum()))
        rec["matched"].append({
            "level": t["level"], "errors_mm": errs, "confidences": confs, "mask_dice": dice,
            "path_errors_mm": path_errs,
            "level_no_anchor": levels["none"][1][fi], "anchor_no_anchor": levels["none"][0],
            "level_target_anchor": levels["target"][1][fi],
        })  # fmt: skip
    return rec


def evaluate(
    model, data: Path, split: str = "all", limit: int | None = None, refiner=None,
    centre_threshold: float = CENTRE_THRESHOLD,
) -> dict[str, Any]:  # fmt: skip
    """Every view (clean and degraded) of the cases under ``data``; ``split`` ``validation`` keeps
    only the training folder's held-out cases. ``centre_threshold``: the detector's peak threshold
    (recall against precision)."""
    records = []
    for case_dir in case_dirs(data):
        case = json.loads((case_dir / "case.json").read_text())
        if split == "validation" and not is_validation(case["case_id"]):
            continue
        targets = case.get("target_levels") or [None]
        for view in case["views"]:
            # Real cases name their views after the target they are centred on (e.g. "L1-ort-ap").
            target = next((t for t in targets if t and view["name"].startswith(f"{t}-")), targets[0])
            for degraded in [False] + ([True] if view.get("degraded_image") else []):
                records.append(evaluate_view(model, case_dir, view, degraded, target, refiner, centre_threshold))
                if limit and len(records) >= limit:
                    return summarise(records, centre_threshold)
    return summarise(records, centre_threshold)


def _stats(x: list[float]) -> dict[str, float] | None:
    if not x:
        return None
    return {"mean": float(np.mean(x)), "median": float(np.median(x)), "p90": float(np.percentile(x, 90))}


def view_kind(name: str) -> str:
    """``ap``, ``lateral`` or ``random`` from a view's name (``ort-ap``, ``L1-ort-lat``, ``rand0-a``)."""
    return "ap" if name.endswith("ort-ap") else "lateral" if name.endswith("ort-lat") else "random"


def _recall_by(records: list[dict[str, Any]], key) -> dict[str, dict[str, Any]]:
    """Instance recall per group of views: the real CT's lateral views were found far less often
    than its AP views, which one pooled number hid."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        g = out.setdefault(key(r), {"n_true": 0, "n_matched": 0})
        g["n_true"] += r["n_true"]
        g["n_matched"] += len(r["matched"])
    for g in out.values():
        g["recall"] = g["n_matched"] / g["n_true"] if g["n_true"] else None
    return dict(sorted(out.items()))


PR_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def precision_recall(records: list[dict[str, Any]], floor: float | None = None) -> dict[str, Any] | None:
    """Detection quality over every threshold down to ``floor``, the run's own centre threshold
    (the detector reports nothing below it, and at most ``nets.detect.MAX_VERTEBRAE`` a view: run
    the evaluation at a low one, e.g. 0.05, for the whole curve): average precision (area under
    the precision-recall curve, precision made non-increasing), recall and precision at the
    ``PR_THRESHOLDS`` at or above the floor, and the threshold of best F1. Why: runs whose heatmaps
    are calibrated differently (one under-confident, one not) compare at one threshold only by
    accident. Equal scores count their misses first (no tie flatters the curve)."""
    n_true = sum(r["n_true"] for r in records)
    dets = sorted((tuple(d) for r in records for d in r.get("detections", [])), key=lambda d: (-d[0], d[1]))
    if not n_true or not dets:
        return None
    scores = np.array([s for s, _ in dets])
    tp = np.cumsum([hit for _, hit in dets])
    recall, precision = tp / n_true, tp / np.arange(1, len(dets) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * envelope))
    f1 = 2 * recall * precision / np.maximum(recall + precision, 1e-9)
    b = int(np.argmax(f1))

    def at(thr: float) -> dict[str, float] | None:
        k = int(np.sum(scores >= thr))
        return {"recall": round(float(recall[k - 1]), 4), "precision": round(float(precision[k - 1]), 4)} if k else None

    lowest = float(scores.min()) if floor is None else floor
    return {
        "average_precision": round(ap, 4),
        "down_to_threshold": floor,
        "at": {str(t): at(t) for t in PR_THRESHOLDS if t >= lowest},
        "best_f1": {"threshold": round(float(scores[b]), 4), "f1": round(float(f1[b]), 4),
                    "recall": round(float(recall[b]), 4), "precision": round(float(precision[b]), 4)},
    }  # fmt: skip


def summarise(records: list[dict[str, Any]], centre_threshold: float | None = None) -> dict[str, Any]:
    matched = [m for r in records for m in r["matched"]]
    n_true = sum(r["n_true"] for r in records)
    n_found = sum(r["n_found"] for r in records)
    errs = np.array([e for m in matched for e in m["errors_mm"]])
    confs = np.array([c for m in matched for c in m["confidences"]])
    curve = []
    for frac in KEEP_FRACTIONS:
        if errs.size == 0:
            break
        thr = float(np.quantile(confs, 1 - frac)) if frac < 1 else -np.inf
        kept = errs[confs >= thr]
        curve.append({"kept": frac, "threshold": None if frac == 1 else round(thr, 4),
                      "mean_mm": float(kept.mean()), "median_mm": float(np.median(kept)),
                      "p90_mm": float(np.percentile(kept, 90))})  # fmt: skip

    def acc(key: str) -> float | None:
        return float(np.mean([m[key] == m["level"] for m in matched])) if matched else None

    return {
        "n_views": len(records),
        "n_true": n_true,
        "n_found": n_found,
        "instance_recall": len(matched) / n_true if n_true else None,
        "instance_precision": len(matched) / n_found if n_found else None,
        "landmarks": curve,
        "mask_dice_mean": float(np.mean([m["mask_dice"] for m in matched])) if matched else None,
        # the 2D-GeoPlan head: cannula entry/target points in the view, mm at the detector
        "path_error_mm": _stats([e for m in matched for e in m.get("path_errors_mm", [])]),
        "level_accuracy_no_anchor": acc("level_no_anchor"),
        "level_accuracy_target_anchor": acc("level_target_anchor"),
        "no_anchor_kinds": {k: sum(m["anchor_no_anchor"] == k for m in matched) for k in ("ribs", "guess")},
        "recall_by_view": _recall_by(records, lambda r: view_kind(r["view"])),
        "recall_by_image": _recall_by(records, lambda r: "degraded" if r["degraded"] else "clean"),
        "precision_recall": precision_recall(records, centre_threshold),
        "average_precision_by_view": {
            k: (precision_recall([r for r in records if view_kind(r["view"]) == k]) or {}).get("average_precision")
            for k in ("ap", "lateral", "random")
        },
        "records": records,
    }
