"""The fit: pose + shape of one or more neighbouring vertebrae on two X-rays, jointly.

Every instance is drawn as a solid (:class:`.solid.Solid`) into one image per view with the splat
renderer; the objective sums, per the method:

- ``fit`` (the product): a landmark reprojection term (robust Cauchy loss of the projected model
  landmarks against the 2-D landmarks, in units of their noise) and a level-conditioned
  Mahalanobis shape prior, always; and the image terms named by ``loss`` (:mod:`.terms`; default
  ``analytic+mask``): ``mask``, an instance-mask term (1 − soft Dice of each instance's rendered
  silhouette 1 − exp(−κ∫μ) against its 2-D instance mask, per view where a mask exists);
  ``analytic``, 1 − gradient correlation of the rendered image with the X-ray inside the
  instances' region; ``learned``, the multi-view network's predicted MASD of each instance
  (:mod:`.learned`);
- ``ncc`` (the paper's baseline): 1 − intensity NCC of the rendered image with the X-ray, plus the
  same prior, from the same initialisation.

Coarse-to-fine (merged points on small images first, then every point at the fitting resolution),
a few restarts around the initial pose at the coarse stage (the best loss is kept), early stop on a
plateau, and a verdict per instance with its reasons (landmark reprojection, silhouette overlap and
shape plausibility, measured on the evidence).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..geometry.projection import Projection
from ..render.renderer import MODES as RENDER_MODES
from ..render.renderer import SplatRenderer
from ..ssm.model import ShapeModel
from .init import InitResult, instance_fields
from .landmarks2d import VertebraEvidence
from .similarity import gradient_correlation, ncc, soft_dice
from .solid import LANDMARK_COUNT, Solid
from .terms import DEFAULT_LOSS, loss_terms

METHODS = ("fit", "ncc")


@dataclass
class FitView:
    projection: Projection  # of the image as given (full resolution)
    image: np.ndarray  # (H, W) line integrals, bone bright


@dataclass
class FitTarget:
    level: str
    model: ShapeModel
    init: InitResult
    evidence: list[VertebraEvidence]  # per view, pixels of the full-resolution image
    masks: list[np.ndarray | None]  # per view: (H, W) instance mask, or None where there is none


@dataclass(frozen=True)
class Stage:
    size: int  # fitting image size (px, square images are resampled to it)
    cell_mm: float | None  # merge render points into cells of this size (None: every point)
    n_modes: int  # shape modes free in this stage
    iterations: int


@dataclass
class FitConfig:
    method: str = "fit"
    # Chosen by ablation on synthetic scenes of their own seeds (Testing/bench/fit_ablation.py,
    # BENCHMARKS.md): the image and mask terms carry the accuracy, the landmarks (σ = 2 mm noise)
    # mostly the robustness — at full weight they pull the fit towards their own noise.
    w_mask: float = 3.0
    w_landmarks: float = 0.2
    w_image: float = 3.0
    w_prior: float = 0.02
    loss: str = DEFAULT_LOSS  # image terms of the fit method (see LOSS_TERMS)
    w_learned: float = 0.5  # per mm of predicted MASD
    similarity: str | None = None  # learned similarity weights (default: the shipped ones)
    kappa: float = 1.0  # silhouette = 1 − exp(−κ ∫μ), ∫μ in cortical-density·mm
    landmark_noise_mm: float = 2.0  # at the detector: the robust loss's scale
    stages: tuple[Stage, ...] = (Stage(128, 3.0, 5, 60), Stage(256, None, 15, 50))
    restarts: int = 3  # candidates at the coarse stage, the initial pose included
    restart_iterations: int = 15
    restart_mm: float = 4.0
    restart_deg: float = 4.0
    lr_mm: float = 0.6
    lr_rad: float = 0.012
    lr_coeff: float = 0.08
    plateau_window: int = 12
    plateau_tol: float = 2e-3
    max_coeff: float = 5.0  # |b_k| ≤ 5σ: a box on the shape coefficients (beyond it, no plausible vertebra)
    max_shift_mm: float = 40.0  # a stage stops when an instance moves this far from where it began
    roi_margin_mm: float = 12.0  # around the instances' projected extent, at the detector
    # Verdict thresholds (see :func:`_verdict`).
    max_landmark_rms_mm: float = 6.0  # 3σ of the landmark noise, at the detector
    min_silhouette_dice: float = 0.80
    max_mahalanobis: float | None = None  # default: √χ²(0.999, K)
    # The splat rasteriser (render.MODES): "auto" draws a solid's isotropic points by deposit and
    # blur ("layered"), 1.5–2× faster than patches at 256² for the same image (BENCHMARKS.md).
    render_mode: str = "auto"
    seed: int = 0
    device: str = "cpu"  # a torch device: "cpu" or "cuda" (see devices.resolve_device)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown fit method {self.method!r}", f"use one of {', '.join(METHODS)}")
        loss_terms(self.loss)
        weights = (self.w_mask, self.w_landmarks, self.w_image, self.w_prior, self.w_learned)
        if not all(math.isfinite(w) and w >= 0 for w in weights) or self.restarts < 1 or not self.stages:
            raise UserError("fit settings out of range", "weights >= 0, at least one restart and one stage")
        if self.render_mode not in RENDER_MODES:
            raise UserError(f"unknown render mode {self.render_mode!r}", f"use one of {', '.join(RENDER_MODES)}")


@dataclass
class FitResult:
    level: str
    coeffs: np.ndarray
    rotvec: np.ndarray
    translation: np.ndarray
    converged: bool
    reason: str
    checks: dict[str, Any]
    iterations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def points(self, model: ShapeModel) -> np.ndarray:
        return model.instance(self.coeffs, self.rotvec, self.translation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "converged": self.converged,
            "reason": self.reason,
            **instance_fields(self.coeffs, self.rotvec, self.translation),
            "checks": self.checks,
            "iterations": self.iterations,
            "seconds": round(self.seconds, 3),
        }


def _pool(a: np.ndarray, size: int, device=None) -> torch.Tensor:
    """Area-average an (H, W) array to (size, size) (block means when H, W are multiples of size)."""
    t = torch.as_tensor(np.asarray(a, np.float32), device=device)[None, None]
    h, w = a.shape
    if h % size == 0 and w % size == 0:
        return torch.nn.functional.avg_pool2d(t, (h // size, w // size))[0, 0]
    return torch.nn.functional.interpolate(t, (size, size), mode="area")[0, 0]


def _cauchy(r2: torch.Tensor) -> torch.Tensor:
    return torch.log1p(r2)


class _Problem:
    """Everything of one stage that does not change while optimising."""

    def __init__(
        self,
        targets: list[FitTarget],
        views: list[FitView],
        stage: Stage,
        cfg: FitConfig,
        background: torch.Tensor | None = None,
        drawn_only: bool = False,
    ) -> None:
        self.cfg, self.stage = cfg, stage
        self.device = dev = torch.device(cfg.device)
        f32 = {"dtype": torch.float32, "device": dev}
        self.background = background  # (V, H, W): instances held fixed in this stage, drawn once
        self.solids = [Solid(t.model, stage.cell_mm, device=dev) for t in targets]
        self.index = torch.cat(
            [torch.full((len(s),), i, dtype=torch.int64, device=dev) for i, s in enumerate(self.solids)]
        )
        self.variance = torch.cat([torch.full((len(s),), s.variance, **f32) for s in self.solids])
        self.mass = torch.cat([s.mass for s in self.solids])
        size = stage.size
        self.projections = [v.projection.resized((size, size)) for v in views]
        self.P = torch.as_tensor(np.stack([p.P for p in self.projections]), **f32)
        self.images = [_pool(v.image, size, dev) for v in views]
        # Silhouettes are compared with area fractions of the masks at the fitting resolution.
        self.masks = [[None if m is None else _pool(m.astype(np.float32), size, dev) for m in t.masks]
                      for t in targets]  # fmt: skip
        # Landmarks stay in full-resolution pixels, scaled by their noise there.
        self.full_P = [torch.tensor(np.array(v.projection.P), **f32) for v in views]
        self.lm_sigma_px = [cfg.landmark_noise_mm / float(np.mean(v.projection.pixel_spacing_mm)) for v in views]
        names = [n for n in targets[0].model.annotation_names[:LANDMARK_COUNT]]
        self.landmarks = []  # per target, per view: (indices, observed uv)
        for t in targets:
            per_view = []
            for ev in t.evidence:
                keys = [n for n in names if n in ev.landmarks]
                idx = torch.as_tensor([names.index(n) for n in keys], dtype=torch.int64, device=dev)
                uv = torch.as_tensor(np.array([ev.landmarks[n] for n in keys]).reshape(-1, 2), **f32)
                per_view.append((idx, uv))
            self.landmarks.append(per_view)
        self.b_level = [
            torch.as_tensor(t.model.level_mean_coeffs.get(t.level, np.zeros(t.model.n_modes)), **f32) for t in targets
        ]
        self.renderer = SplatRenderer(mode=cfg.render_mode)
        self.roi = None
        self.terms = loss_terms(cfg.loss) if cfg.method == "fit" else ()
        self.learned = None
        if "learned" in self.terms and not drawn_only:  # instances only drawn need no network
            from .learned import LearnedTerm

            images, projections = [v.image for v in views], [v.projection for v in views]
            self.learned = LearnedTerm([t.model for t in targets], images, projections, cfg.similarity, dev)

    def render_fixed(self, states: list[dict[str, np.ndarray]]) -> torch.Tensor:
        """The image (V, H, W) of instances in ``states``, without gradients."""
        with torch.no_grad():
            params = _params(states, self.device)
            means = torch.cat([s.place(p["b"], p["r"], p["t"])[0] for s, p in zip(self.solids, params, strict=True)])
            size = self.stage.size
            res = self.renderer.render(means, self.variance, self.mass, self.P, (size, size), self.index, len(params))
        return res.images

    def set_roi(self, params: list[dict[str, torch.Tensor]]) -> None:
        """Region of the image term: the instances' projected extent plus a margin, fixed for a
        stage so the objective does not jump while optimising."""
        with torch.no_grad():
            pts = torch.cat([s.place(p["b"], p["r"], p["t"])[0] for s, p in zip(self.solids, params, strict=True)])
        self.roi = []
        for proj in self.projections:
            uv = proj.project(pts.double().cpu().numpy())
            m = self.cfg.roi_margin_mm / float(np.mean(proj.pixel_spacing_mm))
            w, h = proj.image_size
            lo = np.floor(uv.min(0) - m).clip(0, [w - 1, h - 1]).astype(int)
            hi = np.ceil(uv.max(0) + m).clip(0, [w - 1, h - 1]).astype(int)
            r = torch.zeros((h, w), device=self.device)
            r[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = 1.0
            self.roi.append(r)

    def loss(self, params: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, float], Any]:
        cfg = self.cfg
        placed = [s.place(p["b"], p["r"], p["t"]) for s, p in zip(self.solids, params, strict=True)]
        means = torch.cat([x for x, _ in placed])
        size = self.stage.size
        res = self.renderer.render(means, self.variance, self.mass, self.P, (size, size), self.index, len(self.solids))
        img = res.images if self.background is None else res.images + self.background
        terms: dict[str, torch.Tensor] = {}
        prior = torch.stack([((p["b"] - bl) ** 2).mean() for p, bl in zip(params, self.b_level, strict=True)]).mean()
        terms["prior"] = prior
        if cfg.method == "ncc":
            terms["image"] = torch.stack(
                [1 - ncc(img[v], self.images[v], self.roi[v]) for v in range(len(self.images))]
            ).mean()
            total = terms["image"] + cfg.w_prior * prior
        else:
            sil = res.silhouettes(cfg.kappa)
            dice = [
                1 - soft_dice(sil[v, i], m)
                for i, masks in enumerate(self.masks)
                for v, m in enumerate(masks)
                if m is not None
            ]
            terms["mask"] = torch.stack(dice).mean() if dice else torch.zeros((), device=self.device)
            lm = []
            for (_, ann), per_view in zip(placed, self.landmarks, strict=True):
                for v, (idx, uv) in enumerate(per_view):
                    if len(idx) == 0:
                        continue
                    P = self.full_P[v]
                    h = ann[idx] @ P[:, :3].T + P[:, 3]
                    pred = h[:, :2] / h[:, 2:3]
                    lm.append(_cauchy(((pred - uv) ** 2).sum(-1) / self.lm_sigma_px[v] ** 2))
            terms["landmarks"] = torch.cat(lm).mean() if lm else torch.zeros((), device=self.device)
            total = cfg.w_landmarks * terms["landmarks"] + cfg.w_prior * prior
            if "mask" in self.terms:
                total = total + cfg.w_mask * terms["mask"]
            if "analytic" in self.terms:
                terms["image"] = torch.stack(
                    [1 - gradient_correlation(img[v], self.images[v], self.roi[v]) for v in range(len(self.images))]
                ).mean()
                total = total + cfg.w_image * terms["image"]
            if self.learned is not None:
                terms["learned"] = self.learned(params)
                total = total + cfg.w_learned * terms["learned"]
        return total, {k: float(v.detach()) for k, v in terms.items()}, res


def _params(states: list[dict[str, np.ndarray]], device) -> list[dict[str, torch.Tensor]]:
    return [
        {k: torch.tensor(np.asarray(s[k], np.float32), requires_grad=True, device=device) for k in ("b", "r", "t")}
        for s in states
    ]


def _state(params: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    return [{k: p[k].detach().cpu().numpy().astype(np.float64).copy() for k in p} for p in params]


def _run_stage(
    prob: _Problem,
    states: list[dict[str, np.ndarray]],
    iterations: int,
    history: list[dict[str, float]],
    tag: str,
    trace: list[tuple[str, int, list[dict[str, np.ndarray]]]] | None = None,
) -> tuple[list[dict[str, np.ndarray]], float, int]:
    """Adam on every instance's pose and first ``n_modes`` coefficients, learning rates decaying
    linearly to 10 %; the best state seen is returned (with its loss and the iterations run).
    ``trace``: every iterate's states are appended as (tag, iteration, states)."""
    cfg = prob.cfg
    params = _params(states, prob.device)
    groups = []
    for p in params:
        groups += [{"params": [p["t"]], "lr": cfg.lr_mm}, {"params": [p["r"]], "lr": cfg.lr_rad}]
        groups += [{"params": [p["b"]], "lr": cfg.lr_coeff}]
    opt = torch.optim.Adam(groups)
    base = [g["lr"] for g in opt.param_groups]
    best, best_loss, since = _state(params), math.inf, 0
    starts = [torch.as_tensor(np.asarray(st["t"], np.float32), device=prob.device) for st in states]
    it = 0
    for it in range(1, iterations + 1):
        opt.zero_grad()
        total, terms, _ = prob.loss(params)
        if not torch.isfinite(total):
            break
        value = float(total.detach())
        if trace is not None:
            trace.append((tag, it, _state(params)))
        if value < best_loss - cfg.plateau_tol * max(abs(best_loss), 1e-3):
            best, best_loss, since = _state(params), value, 0
        else:
            since += 1
            if value < best_loss:
                best, best_loss = _state(params), value
        history.append({"stage": tag, "loss": value, **terms, "t": time.perf_counter()})
        if since >= cfg.plateau_window:
            break
        # A run-away (the image term dragging an instance off towards the source or out of the
        # field) is not a fit, and near the source its footprints grow without bound: stop there.
        if any(
            float(torch.linalg.norm(p["t"].detach() - t0)) > cfg.max_shift_mm
            for p, t0 in zip(params, starts, strict=True)
        ):
            history[-1]["ran_away"] = 1.0
            break
        total.backward()
        for p in params:
            p["b"].grad[prob.stage.n_modes :] = 0.0
        decay = 1.0 - 0.9 * (it - 1) / max(iterations - 1, 1)
        for g, lr in zip(opt.param_groups, base, strict=True):
            g["lr"] = lr * decay
        opt.step()
        with torch.no_grad():
            for p in params:
                p["b"].clamp_(-cfg.max_coeff, cfg.max_coeff)
    return best, best_loss, it


def _perturbed(states: list[dict[str, np.ndarray]], rng: np.random.Generator, cfg: FitConfig):
    from scipy.spatial.transform import Rotation

    out = []
    for s in states:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        dR = Rotation.from_rotvec(axis * np.radians(cfg.restart_deg) * rng.uniform(0.5, 1.0))
        r = (dR * Rotation.from_rotvec(s["r"])).as_rotvec()
        out.append({"b": s["b"].copy(), "r": r, "t": s["t"] + rng.uniform(-1, 1, 3) * cfg.restart_mm})
    return out


def _chi_threshold(k: int) -> float:
    from scipy.stats import chi2

    return float(np.sqrt(chi2.ppf(0.999, k)))


def _verdict(
    prob: _Problem, states: list[dict[str, np.ndarray]], targets: list[FitTarget], views: list[FitView]
) -> list[tuple[bool, str, dict[str, Any]]]:
    """Per instance: converged or not, why, and the measured checks — landmark reprojection RMS at
    the detector (≤ 3σ of the landmark noise), hard silhouette Dice in every view with a mask, and
    the shape's Mahalanobis distance from the level's mean (≤ √χ²(0.999, K))."""
    cfg = prob.cfg
    out = []
    with torch.no_grad():
        params = _params(states, prob.device)
        _, _, res = prob.loss(params)
        sil = res.silhouettes(cfg.kappa)
        # Reported, not judged: the network's MASD is not calibrated as a pass/fail threshold.
        predicted = prob.learned.predict(params).tolist() if prob.learned is not None else None
    for i, (t, s) in enumerate(zip(targets, states, strict=True)):
        checks: dict[str, Any] = {}
        fails = []
        ann = t.model.annotations(t.model.instance(s["b"], s["r"], s["t"]))
        errs = []
        for v, ev in enumerate(t.evidence):
            px_mm = float(np.mean(views[v].projection.pixel_spacing_mm))
            for n, uv in ev.landmarks.items():
                errs.append(np.linalg.norm(views[v].projection.project(ann[n][None])[0] - uv) * px_mm)
        if errs:
            rms = float(np.sqrt(np.mean(np.square(errs))))
            checks["landmark_rms_mm"] = round(rms, 3)
            if rms > cfg.max_landmark_rms_mm:
                fails.append(f"landmark reprojection {rms:.1f} mm > {cfg.max_landmark_rms_mm:g} mm")
        dices = []
        for v, m in enumerate(prob.masks[i]):
            if m is None:
                continue
            a, b = sil[v, i] > 0.5, m > 0.5
            dices.append(float(2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1)))
        if dices:
            checks["silhouette_dice"] = [round(d, 4) for d in dices]
            if min(dices) < cfg.min_silhouette_dice:
                fails.append(f"silhouette Dice {min(dices):.2f} < {cfg.min_silhouette_dice:g}")
        if not errs and not dices:
            fails.append("no landmarks or instance masks to verify the fit against")
        if predicted is not None:
            checks["predicted_masd_mm"] = round(float(predicted[i]), 3)
        b_level = np.asarray(t.model.level_mean_coeffs.get(t.level, np.zeros(t.model.n_modes)))
        maha = float(np.linalg.norm(s["b"] - b_level))
        limit = cfg.max_mahalanobis or _chi_threshold(t.model.n_modes)
        checks["mahalanobis"] = round(maha, 3)
        if maha > limit:
            fails.append(f"implausible shape (Mahalanobis {maha:.1f} > {limit:.1f})")
        out.append((not fails, "; ".join(fails) or "all checks passed", checks))
    return out


def fit(
    targets: list[FitTarget],
    views: list[FitView],
    cfg: FitConfig | None = None,
    primary: list[int] | None = None,
    progress=None,
    trace: list[tuple[str, int, list[dict[str, np.ndarray]]]] | None = None,
) -> list[FitResult]:
    """Fit every target jointly on the views (see the module docstring); one result per target.
    ``primary``: indices of the targets that matter (default all); the others are neighbours that
    help explain the image and are not refined in the last stage. ``progress(fraction, message)``
    is called as the stages start. ``trace`` (a list) receives every iterate as (stage tag,
    iteration, the active instances' states): the fit's trajectory, e.g. for training samples."""
    cfg = cfg or FitConfig()
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"fit device {cfg.device!r}: no CUDA GPU is available to this Python", "fit on the cpu")
    if len(views) != 2:
        raise UserError(f"{len(views)} views given", "give two X-rays (two views) to fit")
    if not targets:
        raise UserError("nothing to fit", "give at least one vertebra with its initialisation")
    for t in targets:
        if len(t.evidence) != len(views) or len(t.masks) != len(views):
            raise UserError(f"{t.level}: evidence for {len(t.evidence)} views, {len(views)} X-rays", "one per view")
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    states = [{"b": t.init.coeffs.copy(), "r": t.init.rotvec.copy(), "t": t.init.translation.copy()} for t in targets]
    history: list[dict[str, float]] = []
    iterations = 0
    n_stages = len(cfg.stages)
    for k, stage in enumerate(cfg.stages):
        if progress is not None:
            progress(k / n_stages, f"fit stage {k + 1}/{n_stages} ({stage.size} px)")
        # The last stage refines only the primary instances; the others stay where the earlier
        # stages put them and are drawn once, as a fixed part of the image (a 3-4× cheaper stage).
        active = list(range(len(targets))) if primary is None or k < n_stages - 1 else list(primary)
        fixed = [i for i in range(len(targets)) if i not in active]
        background = None
        if fixed:
            held = _Problem([targets[i] for i in fixed], views, stage, cfg, drawn_only=True)
            background = held.render_fixed([states[i] for i in fixed])
        prob = _Problem([targets[i] for i in active], views, stage, cfg, background)
        sub = [states[i] for i in active]
        prob.set_roi(_params(sub, prob.device))
        if k == 0 and cfg.restarts > 1:
            candidates = [sub] + [_perturbed(sub, rng, cfg) for _ in range(cfg.restarts - 1)]
            tried = []
            for c, cand in enumerate(candidates):
                st, loss, n = _run_stage(prob, cand, cfg.restart_iterations, history, f"restart{c}", trace)
                tried.append((loss, c, st))
                iterations += n
            sub = min(tried, key=lambda x: (x[0], x[1]))[2]
        sub, _, n = _run_stage(prob, sub, stage.iterations, history, f"stage{k}", trace)
        iterations += n
        for i, st in zip(active, sub, strict=True):
            states[i] = st
    if fixed:  # the verdict sees every instance drawn together, at the last stage's resolution
        prob = _Problem(targets, views, cfg.stages[-1], cfg)
    prob.set_roi(_params(states, prob.device))
    verdicts = _verdict(prob, states, targets, views)
    seconds = time.perf_counter() - t0
    return [
        FitResult(t.level, s["b"], s["r"], s["t"], ok, why, checks, iterations, seconds, history)
        for t, s, (ok, why, checks) in zip(targets, states, verdicts, strict=True)
    ]
