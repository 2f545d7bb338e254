"""Running the annotation network on an X-ray: vertebrae, their order and levels, landmarks, masks.

Decoding of the dense heads (:mod:`.detector`): centre peaks are the vertebrae; each landmark is the
heatmap peak of its type nearest where the vertebra's displacement head puts it (peaks assigned
one-to-one, nearest pairs first), else that regressed position with the heatmap's value there as a
(low) confidence; each vertebra's mask is its dynamic filter over the shared mask features.

Order: the vertebrae sorted along the principal axis of their centres, cranial first (the direction
in which the level head's guesses increase). Levels, in order of preference:
``target`` (the clinician's target level given to the vertebra nearest the image centre, where the
C-arm is centred), ``ribs`` (the last rib-bearing vertebra before a lumbar one is T12), ``guess``
(the level head's median offset from the order — no anchor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional

from ..anatomy.landmarks import LANDMARKS
from ..anatomy.levels import LEVELS
from .detector import Detector, instance_mask_logits
from .detector_data import PATH_POINTS, letterbox, normalise
from .detector_train import DISPLACEMENT_SCALE, LEVEL_SCALE
from .refiner_data import crop_matrix, cut, lowpass, to_crop

REFINE_PASSES = 2  # the second crop is centred on the first one's body centre
SIGMA_HALF_MM = 2.0  # a landmark whose predicted spread is this (mm at the detector) has confidence 0.5
CENTRE_THRESHOLD = 0.2  # on the synthetic validation split: recall 0.79, precision 0.71 (0.3: 0.48, 0.86)
LANDMARK_THRESHOLD = 0.05
MAX_VERTEBRAE = 24
MATCH_RADIUS_CELLS = 4.0


@dataclass
class DetectedVertebra:
    score: float  # centre heatmap peak
    centre: np.ndarray  # (2,) image pixels (u, v)
    lumbar_prob: float
    level_guess: float  # level index (T1 = 0) guessed without an anchor
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)  # name → (u, v) image pixels
    confidence: dict[str, float] = field(default_factory=dict)  # name → heatmap value
    mask: np.ndarray | None = None  # (H, W) probability
    # 2D-GeoPlan: side → {"entry", "target"} → (u, v) image pixels of the cannula in this view
    paths: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    order: int = -1  # 0 = most cranial
    level: str | None = None


def _peaks(heat: torch.Tensor, threshold: float, limit: int) -> list[tuple[int, int, float]]:
    """(x, y, value) of the 3×3 local maxima above ``threshold`` of a (g, g) map, best first."""
    pooled = functional.max_pool2d(heat[None, None], 3, stride=1, padding=1)[0, 0]
    ys, xs = torch.nonzero((heat == pooled) & (heat > threshold), as_tuple=True)
    vals = heat[ys, xs]
    idx = torch.argsort(vals, descending=True)[:limit]
    return [(int(xs[i]), int(ys[i]), float(vals[i])) for i in idx]


@torch.no_grad()
def detect(model: Detector, image: np.ndarray, centre_threshold: float = CENTRE_THRESHOLD) -> list[DetectedVertebra]:
    """Vertebrae found in one X-ray (line integrals, any size); an empty list when none is."""
    cfg = model.config
    s = float(cfg.stride)
    h, w = image.shape
    x, box = letterbox(image, cfg.image_size)
    device = next(model.parameters(), torch.zeros(())).device
    out = {k: v[0].cpu() for k, v in model(torch.from_numpy(x)[None, None].to(device)).items()}
    centre_heat = torch.sigmoid(out["centre"][0])
    found = _peaks(centre_heat, centre_threshold, MAX_VERTEBRAE)
    if not found:
        return []
    cx = torch.tensor([p[0] for p in found])
    cy = torch.tensor([p[1] for p in found])
    centres = torch.stack([cx, cy], 1).float() + out["centre_offset"][:, cy, cx].T  # cells
    disp = out["displacement"][:, cy, cx].T.reshape(len(found), len(LANDMARKS), 2) * DISPLACEMENT_SCALE
    regressed = centres[:, None, :] + disp  # (K, L, 2) cells
    lm_heat = torch.sigmoid(out["landmarks"])
    g = lm_heat.shape[-1]
    positions = regressed.clone()
    conf = torch.zeros(len(found), len(LANDMARKS))
    for j in range(len(LANDMARKS)):
        cand = _peaks(lm_heat[j], LANDMARK_THRESHOLD, 4 * MAX_VERTEBRAE)
        taken_v, taken_c = set(), set()
        if cand:
            pts = torch.tensor([[c[0], c[1]] for c in cand]).float()
            pts = pts + out["landmark_offset"][2 * j : 2 * j + 2, pts[:, 1].long(), pts[:, 0].long()].T
            d = torch.cdist(regressed[:, j], pts)
            for flat in torch.argsort(d.reshape(-1)).tolist():
                v, c = divmod(flat, len(cand))
                if d[v, c] > MATCH_RADIUS_CELLS:
                    break
                if v in taken_v or c in taken_c:
                    continue
                taken_v.add(v)
                taken_c.add(c)
                positions[v, j] = pts[c]
                conf[v, j] = cand[c][2]
        for v in range(len(found)):
            if v not in taken_v:
                r = regressed[v, j].round().long().clamp(0, g - 1)
                conf[v, j] = float(lm_heat[j, r[1], r[0]])
    path_px = centres[:, None, :] + out["paths"][:, cy, cx].T.reshape(len(found), -1, 2) * DISPLACEMENT_SCALE
    logits = instance_mask_logits(out["mask_features"], out["mask_filter"][:, cy, cx].T, centres)
    masks = _masks_to_image(logits, box, cfg.image_size, (h, w))
    result = []
    for v, (_x, _y, score) in enumerate(found):
        uv = box.to_image(positions[v].numpy() * s)
        path_uv = box.to_image(path_px[v].numpy() * s)
        paths: dict[str, dict[str, np.ndarray]] = {}
        for (side, name), p in zip(PATH_POINTS, path_uv, strict=True):
            paths.setdefault(side, {})[name] = p
        result.append(
            DetectedVertebra(
                score=score,
                centre=box.to_image(centres[v].numpy() * s),
                lumbar_prob=float(torch.sigmoid(out["region"][0, cy[v], cx[v]])),
                level_guess=float(out["level"][0, cy[v], cx[v]]) * LEVEL_SCALE,
                landmarks={n: uv[j] for j, n in enumerate(LANDMARKS)},
                confidence={n: float(conf[v, j]) for j, n in enumerate(LANDMARKS)},
                mask=masks[v],
                paths=paths,
            )
        )
    return result


@torch.no_grad()
def refine(refiner, image: np.ndarray, mm_per_px: float, vertebrae: list[DetectedVertebra]) -> None:
    """The second stage (:mod:`.refiner`) on each vertebra found in ``image`` (``mm_per_px`` at the
    detector): its centre, landmarks, confidences and mask replaced by what the crop around it shows.
    The crop is centred on the first stage's centre, then (``REFINE_PASSES``) on the refined one.
    Confidence of a landmark: 1 / (1 + σ / ``SIGMA_HALF_MM``), σ its predicted spread in mm."""
    if not vertebrae:
        return
    cfg = refiner.config
    n = cfg.crop_px
    centres = [np.asarray(v.centre, float) for v in vertebrae]
    smooth = lowpass(image, crop_matrix(centres[0], mm_per_px, cfg))  # every crop here has one scale
    for _ in range(REFINE_PASSES):
        matrices = [crop_matrix(c, mm_per_px, cfg) for c in centres]
        x = np.stack([normalise(cut(smooth, m, n, filtered=True)) for m in matrices])[:, None]
        out = refiner(torch.from_numpy(x.astype(np.float32)))
        points = [p @ m[:, :2].T + m[:, 2] for p, m in zip(out["points"].numpy(), matrices, strict=True)]
        centres = [p[0] for p in points]
    sigma_mm = np.exp(out["log_sigma"].numpy()) * cfg.mm_per_px
    prob = torch.sigmoid(out["mask"][:, 0]).numpy()
    h, w = image.shape
    corners = np.array([[-0.5, -0.5], [n - 0.5, -0.5], [-0.5, n - 0.5], [n - 0.5, n - 0.5]])
    for k, v in enumerate(vertebrae):
        v.centre = points[k][0]
        v.landmarks = {name: points[k][j] for j, name in enumerate(LANDMARKS)}
        v.confidence = {name: float(1 / (1 + sigma_mm[k, j] / SIGMA_HALF_MM)) for j, name in enumerate(LANDMARKS)}
        # The mask is 0 beyond the crop: sample only the image pixels its corners enclose.
        m = matrices[k]
        box = corners @ m[:, :2].T + m[:, 2]
        u0, v0 = np.maximum(np.floor(box.min(0)).astype(int) - 1, 0)
        u1, v1 = np.minimum(np.ceil(box.max(0)).astype(int) + 2, [w, h])
        v.mask = np.zeros((h, w), np.float32)
        if u1 > u0 and v1 > v0:
            rows, cols = np.mgrid[v0:v1, u0:u1]
            cell = (to_crop(m, np.stack([cols.ravel(), rows.ravel()], 1)) + 0.5) / cfg.stride - 0.5
            v.mask[v0:v1, u0:u1] = _sample(prob[k], cell).reshape(v1 - v0, u1 - u0)


def _sample(grid: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear values of ``grid`` at (u, v) cell coordinates; 0 outside it."""
    from scipy.ndimage import map_coordinates

    return map_coordinates(grid, [uv[:, 1], uv[:, 0]], order=1, mode="constant", cval=0.0)


def _masks_to_image(logits: torch.Tensor, box, size: int, shape: tuple[int, int]) -> np.ndarray:
    """(K, g, g) logits → (K, H, W) probabilities in image pixels (undo the letterbox)."""
    up = functional.interpolate(logits[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    rows, cols = box.region(shape)
    crop = up[:, rows, cols]
    full = functional.interpolate(crop[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
    return torch.sigmoid(full).numpy()


def anatomical_offset(lumbar: list[bool], guesses: np.ndarray, ranks: np.ndarray) -> tuple[str, int]:
    """Without a target: the level index of rank 0, from the last rib-bearing vertebra (the only
    thoracic → lumbar transition in head-to-foot order is T12 → L1: ``ribs``), else from the network's
    level guesses (their median offset from the ranks: ``guess``). ``lumbar``, ``guesses``, ``ranks``
    are in head-to-foot order."""
    for i in range(len(lumbar) - 1):
        if not any(lumbar[: i + 1]) and all(lumbar[i + 1 :]):
            return "ribs", LEVELS.index("T12") - int(ranks[i])
    return "guess", int(np.round(np.median(np.asarray(guesses) - np.asarray(ranks))))


def order_and_levels(
    vertebrae: list[DetectedVertebra],
    image_shape: tuple[int, int] | None = None,
    target_level: str | None = None,
) -> str:
    """Set each vertebra's ``order`` and ``level``; returns the anchor used: ``target``, ``ribs`` or
    ``guess`` (or ``none`` for an empty list)."""
    if not vertebrae:
        return "none"
    c = np.array([v.centre for v in vertebrae])
    # One vertebra: no axis to find; the image's vertical stands in.
    axis = np.linalg.svd(c - c.mean(0), full_matrices=False)[2][0] if len(c) > 1 else np.array([0.0, 1.0])
    t = (c - c.mean(0)) @ axis
    guesses = np.array([v.level_guess for v in vertebrae])
    if len(vertebrae) > 1 and np.corrcoef(t, guesses)[0, 1] < 0:
        t = -t
    ranks = np.argsort(np.argsort(t))
    for v, r in zip(vertebrae, ranks, strict=True):
        v.order = int(r)
    by_order = sorted(vertebrae, key=lambda v: v.order)
    anchor, offset = anatomical_offset(
        [v.lumbar_prob >= 0.5 for v in by_order], guesses[np.argsort(ranks)], np.arange(len(by_order))
    )
    if target_level is not None and image_shape is not None:
        h, w = image_shape
        mid = np.array([(w - 1) / 2, (h - 1) / 2])
        nearest = min(by_order, key=lambda v: float(np.linalg.norm(v.centre - mid)))
        anchor, offset = "target", LEVELS.index(target_level) - nearest.order
    for v in by_order:
        idx = v.order + offset
        v.level = LEVELS[idx] if 0 <= idx < len(LEVELS) else None
    return anchor
