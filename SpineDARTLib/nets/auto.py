"""Automatic evidence for the fit: the annotation network on both X-rays, vertebrae matched across
the views, landmarks and masks in the form the fit takes (:mod:`..fit.landmarks2d`).

Matching: each view's vertebrae get levels from the same anchor (:func:`.detect.order_and_levels`);
a level found in both views is kept only when its two centres are epipolar-consistent (the centre
in one view within ``EPIPOLAR_MM`` of the epipolar line of the other's, at the detector) — a
mislabelled or spurious vertebra in one view fails it and is reported, not fitted. Landmarks whose
confidence is below ``MIN_CONFIDENCE`` are left out (the fit then leans on the rest and the mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..fit.landmarks2d import Landmarks2D, VertebraEvidence
from ..geometry import Projection, epipolar_distance
from .annotator import Annotator
from .detect import DetectedVertebra, order_and_levels

MIN_CONFIDENCE = 0.1
EPIPOLAR_MM = 10.0
MASK_THRESHOLD = 0.5


@dataclass
class AutoEvidence:
    landmarks: Landmarks2D
    masks: list[dict[str, np.ndarray]]  # per view: level → bool mask
    anchors: list[str]  # per view: target, ribs, guess or none
    found: list[list[str]]  # per view: the levels detected
    rejected: dict[str, str] = field(default_factory=dict)  # level → why it is not used
    # per view: level → the cannulas' 2D points (side → entry/target → (u, v)), for 2D-GeoPlan
    paths: list[dict[str, dict[str, dict[str, np.ndarray]]]] = field(default_factory=lambda: [{}, {}])


def match_views(
    per_view: list[list[DetectedVertebra]], projections: list[Projection], anchors: list[str]
) -> AutoEvidence:
    """Levels found in both views and consistent across them → evidence for the fit."""
    best: list[dict[str, DetectedVertebra]] = []
    for dets in per_view:
        by_level: dict[str, DetectedVertebra] = {}
        for d in dets:
            if d.level is not None and (d.level not in by_level or d.score > by_level[d.level].score):
                by_level[d.level] = d
        best.append(by_level)
    found = [sorted(b, key=lambda lv: b[lv].order) for b in best]
    rejected: dict[str, str] = {}
    views: list[dict[str, VertebraEvidence]] = [{}, {}]
    masks: list[dict[str, np.ndarray]] = [{}, {}]
    paths: list[dict[str, dict]] = [{}, {}]
    for level in found[0]:
        if level not in best[1]:
            rejected[level] = "found in view 1 only"
            continue
        a, b = best[0][level], best[1][level]
        mm = float(np.mean(projections[1].pixel_spacing_mm))
        dist = float(epipolar_distance(projections[0], projections[1], a.centre, b.centre)[0]) * mm
        if dist > EPIPOLAR_MM:
            rejected[level] = f"the views disagree (centre {dist:.0f} mm off the epipolar line)"
            continue
        for i, d in enumerate((a, b)):
            keep = [n for n, c in d.confidence.items() if c >= MIN_CONFIDENCE]
            views[i][level] = VertebraEvidence(
                {n: np.asarray(d.landmarks[n], float) for n in keep},
                {n: d.confidence[n] for n in keep},
                np.asarray(d.centre, float),
            )
            if d.mask is not None:
                masks[i][level] = d.mask > MASK_THRESHOLD
            if d.paths:
                paths[i][level] = d.paths
    for level in found[1]:
        if level not in best[0]:
            rejected[level] = "found in view 2 only"
    return AutoEvidence(Landmarks2D(views, source="detector"), masks, anchors, found, rejected, paths)


def auto_evidence(
    annotator: Annotator, images: list[np.ndarray], projections: list[Projection], target_level: str | None
) -> AutoEvidence:
    """Run the network (both stages where installed) on both X-rays (line-integral images) and match
    what it finds."""
    per_view, anchors = [], []
    for image, proj in zip(images, projections, strict=True):
        dets = annotator(image, float(np.mean(proj.pixel_spacing_mm)))
        anchors.append(order_and_levels(dets, image.shape, target_level))
        per_view.append(dets)
    return match_views(per_view, projections, anchors)
