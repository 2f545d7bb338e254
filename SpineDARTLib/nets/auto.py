"""Automatic evidence for the fit: the annotation network on both X-rays, vertebrae matched across
the views, landmarks and masks in the form the fit takes (:mod:`..fit.landmarks2d`).

Matching (:func:`pair_views`): the two views' detections are first paired by epipolar geometry
(a one-to-one assignment of the centres, each pair within ``PAIR_MM`` of the other's epipolar line),
the pairs ordered head to foot by their triangulated height, a level skipped where the 3-D gap
between neighbours is about twice their spacing, and the levels anchored once for both views (the
pair nearest both image centres is the target; else the last rib-bearing pair is T12; else the
network's guesses). Why: anchoring each view on its own (:func:`.detect.order_and_levels`) shifts
every level of a view by one wherever it misses a vertebra or finds a spurious one, and the two
views then disagree everywhere (the demo case with the seventh detector run: T12-L4 found in both
views, only L2 agreed). Detections without a partner get no level. Where nothing pairs, each view
keeps its own levels. A level is then kept only when its two centres are epipolar-consistent within
``EPIPOLAR_MM`` at the detector (:func:`match_views`) — anything else is reported, not fitted.
Landmarks whose confidence is below ``MIN_CONFIDENCE`` are left out (the fit then leans on the rest
and the mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..anatomy.levels import LEVELS
from ..fit.landmarks2d import Landmarks2D, VertebraEvidence
from ..geometry import Projection, epipolar_distance, triangulate
from .annotator import Annotator
from .detect import DetectedVertebra, anatomical_offset, order_and_levels

MIN_CONFIDENCE = 0.1
EPIPOLAR_MM = 10.0
PAIR_MM = 15.0  # pairing gate: adjacent vertebrae lie 20-45 mm apart along the spine
SPACING_MM = 30.0  # a neighbour's distance when too few pairs measure it (thoracic ~25, lumbar ~38)
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


def pair_views(
    per_view: list[list[DetectedVertebra]],
    projections: list[Projection],
    image_shapes: list[tuple[int, int]],
    target_level: str | None,
) -> str | None:
    """Pair the two views' detections, order the pairs and give both members of each the same level
    (and ``order``); unpaired detections get ``level`` None. Returns the anchor used (``target``,
    ``ribs`` or ``guess``), or None where no pair was found (the detections are left as they are)."""
    from scipy.optimize import linear_sum_assignment

    a, b = per_view
    if not a or not b:
        return None
    pa, pb = projections
    mm = float(np.mean(pb.pixel_spacing_mm))
    ca, cb = np.array([d.centre for d in a], float), np.array([d.centre for d in b], float)
    dist = epipolar_distance(pa, pb, np.repeat(ca, len(b), axis=0), np.tile(cb, (len(a), 1))).reshape(len(a), len(b))
    dist = np.where(np.isfinite(dist), dist * mm, np.inf)
    rows, cols = linear_sum_assignment(np.minimum(dist, 1e6))
    pairs = [(i, j) for i, j in zip(rows, cols, strict=True) if dist[i, j] <= PAIR_MM]
    if not pairs:
        return None
    X = triangulate(projections, [ca[[i for i, _ in pairs]], cb[[j for _, j in pairs]]]).points_mm
    # Head to foot: the world is patient RAS, so +z is cranial whatever the C-arm angles.
    keep = np.isfinite(X).all(axis=1)
    pairs, X = [p for p, k in zip(pairs, keep, strict=True) if k], X[keep]
    if not pairs:
        return None
    by_height = np.argsort(-X[:, 2])
    pairs, X = [pairs[k] for k in by_height], X[by_height]
    gaps = np.linalg.norm(np.diff(X, axis=0), axis=1)
    spacing = float(np.median(gaps)) if len(gaps) >= 2 else SPACING_MM
    steps = np.maximum(1, np.round(gaps / max(spacing, 20.0))).astype(int)
    rank = np.concatenate([[0], np.cumsum(steps)])
    members = [(a[i], b[j]) for i, j in pairs]
    if target_level is not None:
        (ha, wa), (hb, wb) = image_shapes
        mid_a, mid_b = np.array([(wa - 1) / 2, (ha - 1) / 2]), np.array([(wb - 1) / 2, (hb - 1) / 2])
        mm_a = float(np.mean(pa.pixel_spacing_mm))
        off = [np.linalg.norm(da.centre - mid_a) * mm_a + np.linalg.norm(db.centre - mid_b) * mm for da, db in members]
        anchor, offset = "target", LEVELS.index(target_level) - int(rank[int(np.argmin(off))])
    else:
        lumbar = [0.5 * (da.lumbar_prob + db.lumbar_prob) >= 0.5 for da, db in members]
        guesses = np.array([0.5 * (da.level_guess + db.level_guess) for da, db in members])
        anchor, offset = anatomical_offset(lumbar, guesses, rank)
    for d in (*a, *b):
        d.level = None
    for (da, db), r in zip(members, rank, strict=True):
        idx = int(r) + offset
        for d in (da, db):
            d.order = int(r)
            d.level = LEVELS[idx] if 0 <= idx < len(LEVELS) else None
    # A level skipped at a double gap may be seen in one view only: an unpaired detection midway
    # between the two pairs takes it (and is then reported as seen in one view, not silently dropped).
    for k in np.flatnonzero(steps == 2):
        idx = int(rank[k]) + 1 + offset
        for v, dets in enumerate(per_view):
            p, q = members[k][v].centre, members[k + 1][v].centre
            mid = [d for d in dets if d.level is None and _midway(d.centre, p, q)]
            if len(mid) == 1 and 0 <= idx < len(LEVELS):
                mid[0].level, mid[0].order = LEVELS[idx], int(rank[k]) + 1
    return anchor


def _midway(c: np.ndarray, p: np.ndarray, q: np.ndarray) -> bool:
    """Whether image point ``c`` lies about halfway between ``p`` and ``q`` (and near the line)."""
    seg, r = q - p, c - p
    length2 = float(seg @ seg)
    if length2 <= 0:
        return False
    along, across = float(r @ seg) / length2, abs(float(seg[0] * r[1] - seg[1] * r[0])) / length2
    return 0.25 < along < 0.75 and across < 0.5


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
    joint = pair_views(per_view, projections, [im.shape for im in images], target_level)
    if joint is not None:
        anchors = [joint, joint]
    return match_views(per_view, projections, anchors)
