"""Training samples of the learned similarity from data-engine cases (``spinedart synth``).

For each case, its orthogonal pair and one of its random pairs (seeded), and each vertebra seen
whole in both views: the *reference* instance is the shape model initialised from the true
landmarks projected into both views (what the model can reach from perfect evidence), then
``per_vertebra`` instances around it — pose and shape perturbed by a seeded magnitude that is dense
near zero and reaches ±15 mm / ±15° / 1.5σ, and one in ten moved by a vertebra's height along the
column (the neighbour confusion that fits fall into). Each instance's label is its MASD to the
true mesh; its input is the window of both X-rays (the clean image and, where the case has one,
the degraded image) and the splat rendering of the instance in the window (:mod:`.similarity`).

MASD here: the mean of the nearest-point distances both ways between 30 000 area-uniform samples
of each surface (point-to-point, ≈ 0.1 mm above the exact point-to-surface ASSD at this density).

**Trajectory samples** (``trajectories`` > 0): for that many vertebrae of each pair, the fit itself
(default loss, this vertebra alone) is run from the benchmark's ``gt-noisy`` evidence of the views
and ``TRAJECTORY_SAMPLES`` of its iterates — from the initialisation through its restarts and
stages to where it ends, a failed fit included — become samples with their true MASD: the
instances a fit actually visits, not only random perturbations. Kept in a cache of their own.

**Ray samples** (``ray_samples`` > 0): per vertebra and pair, the reference and that many instances
moved ``RAY_MM`` along one view's ray (through the vertebra's centre; the views alternate) with a
small perturbation on top: that view sees the instance almost where the vertebra is (only the
magnification changes), the other sees it moved. Why: a network trained on isotropic perturbations
read such an instance as nearly right (measured on the demo case: 5 mm along the lateral ray
predicted 1.1 mm) — a false minimum a two-view fit can slide into. Kept in a cache of their own.

Samples are prepared once per case into a cache folder (one ``.npz`` per case, float16 windows),
in parallel over cases, and reused by every epoch and by a resumed run.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..anatomy.levels import LEVELS
from ..fit.similarity_net import SimilarityConfig, crop_image, window

MIN_MASK_PIXELS = 200  # a vertebra less visible than this in a view is not a sample
SURFACE_SAMPLES = 30_000
MAX_SHIFT_MM = 15.0
MAX_ANGLE_DEG = 15.0
MAX_COEFF = 1.5  # σ
NEIGHBOUR_JUMP = 0.1  # fraction of instances moved by about a vertebra's height along the column
NEIGHBOUR_MM = (22.0, 34.0)
DATA_VERSION = 1  # bump when what a sample holds changes: the cache is keyed by it
TRAJECTORY_SAMPLES = 6  # iterates kept along one traced fit (evenly spaced, first and last included)
TRAJECTORY_VERSION = 1
RAY_MM = (2.0, 10.0)  # shift along one view's ray of a ray sample
RAY_JITTER = 0.1  # the perturbation on top of it, as a fraction of a full one (≤ 1.5 mm, 1.5°, 0.15σ)
RAY_VERSION = 1


def masd(a_points: np.ndarray, b_points: np.ndarray) -> float:
    """Symmetric mean nearest-point distance between two dense surface samplings (mm)."""
    from scipy.spatial import cKDTree

    dab = cKDTree(b_points).query(a_points)[0]
    dba = cKDTree(a_points).query(b_points)[0]
    return float(0.5 * (dab.mean() + dba.mean()))


def perturb(
    ref: dict[str, np.ndarray], rng: np.random.Generator, n_modes: int, scale: float = 1.0, jumps: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One instance around ``ref`` (b, r, t) and the size of what was done to it; ``scale`` shrinks
    the perturbation, ``jumps`` False leaves out the move to a neighbour's place."""
    from scipy.spatial.transform import Rotation

    a = scale * rng.uniform() ** 2  # dense near the truth, where the fit ends
    shift = rng.normal(size=3) * a * MAX_SHIFT_MM / np.sqrt(3)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(MAX_ANGLE_DEG) * a * rng.uniform(-1, 1)
    b = ref["b"].copy()
    b[:n_modes] += rng.normal(size=min(n_modes, len(b))) * a * MAX_COEFF / 2
    jump = 0.0
    if jumps and rng.uniform() < NEIGHBOUR_JUMP:
        jump = float(rng.choice([-1, 1]) * rng.uniform(*NEIGHBOUR_MM))
        shift = shift + np.array([0.0, 0.0, jump])  # world is patient RAS: +z is superior
    r = (Rotation.from_rotvec(axis * angle) * Rotation.from_rotvec(ref["r"])).as_rotvec()
    how = {"magnitude": float(a), "shift_mm": float(np.linalg.norm(shift)), "angle_deg": float(np.degrees(abs(angle))),
           "jump_mm": jump}  # fmt: skip
    return {"b": b, "r": r, "t": ref["t"] + shift}, how


def along_ray(
    ref: dict[str, np.ndarray], centre: np.ndarray, projection, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """A ray sample (see the module docstring): ``ref`` slightly perturbed, then moved along the
    ray from ``projection``'s source through ``centre`` (the reference's centre, mm) by ``RAY_MM``,
    towards the source or away from it."""
    state, how = perturb(ref, rng, 15, scale=RAY_JITTER, jumps=False)
    ray = np.asarray(centre, float) - projection.source_mm
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(*RAY_MM) * ray / np.linalg.norm(ray)
    return {**state, "t": state["t"] + shift}, {**how, "ray_mm": float(np.linalg.norm(shift))}


def _pairs(doc: dict[str, Any], rng: np.random.Generator) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """(target level or None, the pair's two views): a synthetic case's orthogonal pair and one
    random pair; a real case's views are per target (centred on it), each target's first pairs."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for v in doc["views"]:
        groups.setdefault((v.get("target") or "", int(v.get("pair", 0))), []).append(v)
    out = []
    for target in dict.fromkeys(t for t, _ in groups):
        pairs = [p for (t, _), p in sorted(groups.items()) if t == target and len(p) == 2]
        if len(pairs) > 2:
            pairs = [pairs[0], pairs[1 + int(rng.integers(len(pairs) - 1))]]
        out += [(target or None, p) for p in pairs]
    return out


def render_windows(model, state: dict[str, np.ndarray], windows, solid=None) -> np.ndarray:
    """The instance alone rendered into each window: (V, n, n) float32 line integrals."""
    import torch

    from ..fit.learned import render_in_windows
    from ..fit.solid import Solid
    from ..render.renderer import SplatRenderer

    p = {k: torch.as_tensor(np.asarray(state[k], np.float32)) for k in ("b", "r", "t")}
    with torch.no_grad():
        images = render_in_windows(solid or Solid(model), p, windows, SplatRenderer())
    return images.numpy().astype(np.float32)


def reference_instance(model, level: str, projections, landmarks: dict[str, Any]) -> dict[str, np.ndarray]:
    """The instance the shape model reaches from perfect evidence: initialised from the vertebra's
    true 3-D landmarks projected into both views (state dict b, r, t)."""
    from ..fit.init import initialise
    from ..fit.landmarks2d import VertebraEvidence

    evidence = [
        VertebraEvidence(
            {n: p.project(np.asarray(x, float)[None])[0] for n, x in landmarks.items() if n in model.annotation_names}
        )
        for p in projections
    ]
    init = initialise(model, level, projections, evidence)
    return {"b": init.coeffs, "r": init.rotvec, "t": init.translation}


def trajectory_states(model, level: str, xrays, labels, masks, rng: np.random.Generator, seed: int) -> list[dict]:
    """States along the fit of one vertebra (alone, default loss) from the benchmark's ``gt-noisy``
    evidence of these views: ``TRAJECTORY_SAMPLES`` iterates, evenly spaced from the
    initialisation to the last one. Empty when the evidence cannot initialise it."""
    from ..errors import UserError
    from ..fit.evidence import gt_noisy_view
    from ..fit.init import initialise
    from ..fit.landmarks2d import VertebraEvidence
    from ..fit.optimise import FitConfig, FitTarget, FitView, fit

    noisy = [gt_noisy_view(lab, m, float(np.mean(x.projection.pixel_spacing_mm)), rng)
             for lab, m, x in zip(labels, masks, xrays, strict=True)]  # fmt: skip
    evidence = [n.evidence.get(level, VertebraEvidence()) for n in noisy]
    try:
        init = initialise(model, level, [x.projection for x in xrays], evidence)
    except UserError:
        return []
    trace: list = []
    target = FitTarget(level, model, init, evidence, [n.masks.get(level) for n in noisy])
    fit([target], [FitView(x.projection, x.image) for x in xrays], FitConfig(seed=seed), trace=trace)
    keep = np.unique(np.linspace(0, len(trace) - 1, TRAJECTORY_SAMPLES).round().astype(int)) if trace else []
    return [trace[i][2][0] for i in keep]


def prepare_case(
    case_dir: Path,
    config: SimilarityConfig,
    per_vertebra: int,
    seed: int,
    trajectories: int = 0,
    ray_samples: int = 0,
) -> dict[str, np.ndarray]:
    """Every sample of one case (see the module docstring): ``per_vertebra`` perturbed instances of
    each vertebra and pair, or with ``trajectories`` > 0 instead the iterates of that many traced
    fits per pair, or with ``ray_samples`` > 0 the reference and that many ray samples (each a cache
    of its own)."""
    import torch

    from ..fit.solid import Solid
    from ..mesh_io import read_mesh
    from ..ssm.io import model_for_level
    from ..surface import sample_surface
    from ..synth.case import read_masks
    from ..xray import read_xray

    torch.set_num_threads(1)
    doc = json.loads((case_dir / "case.json").read_text())
    rng = np.random.default_rng([seed, int(doc.get("seed") or 0), DATA_VERSION])
    pairs = _pairs(doc, rng)  # the same pairs for both kinds of sample
    if trajectories:
        rng = np.random.default_rng([seed, int(doc.get("seed") or 0), TRAJECTORY_VERSION, 7])
    elif ray_samples:
        rng = np.random.default_rng([seed, int(doc.get("seed") or 0), RAY_VERSION, 11])
    out: dict[str, list] = {k: [] for k in ("xray", "xray_degraded", "render", "masd", "level", "magnitude", "jump")}
    verts = {v["level"]: v for v in doc["vertebrae"]}
    models, meshes, solids = {}, {}, {}
    for only, pair in pairs:
        xr = [read_xray(case_dir / v["image"], case_dir / v["sidecar"]) for v in pair]
        degraded = [
            read_xray(case_dir / v["degraded_image"], case_dir / v["sidecar"]).image
            if v.get("degraded_image")
            else None
            for v in pair
        ]
        labels = [json.loads((case_dir / v["labels"]).read_text()) for v in pair]
        seen = [{i["level"]: i for i in lab["instances"] if i["mask_pixels"] >= MIN_MASK_PIXELS} for lab in labels]
        projections = [x.projection for x in xr]
        usable = [lv for lv, vert in verts.items()
                  if not vert.get("truncated") and all(lv in s for s in seen) and only in (None, lv)]  # fmt: skip
        if trajectories:
            usable = sorted(rng.choice(usable, min(trajectories, len(usable)), replace=False)) if usable else []
            masks = [read_masks(case_dir / v["masks"]) for v in pair]
        for level in usable:
            vert = verts[level]
            if level not in models:
                models[level] = model_for_level(level)
                solids[level] = Solid(models[level])
                v, f = read_mesh(case_dir / vert["mesh"]["path"])[:2]
                meshes[level] = sample_surface(v, f, SURFACE_SAMPLES, seed)
            model = models[level]
            if trajectories:
                states = trajectory_states(model, level, xr, labels, masks, rng, seed)
                hows = [{"magnitude": -1.0, "jump_mm": 0.0}] * len(states)  # magnitude −1: a fit's iterate
            else:
                ref = reference_instance(model, level, projections, vert["landmarks"])
                states, hows = [ref], [{"magnitude": 0.0, "jump_mm": 0.0}]
                for k in range(ray_samples or per_vertebra - 1):
                    if ray_samples:
                        state, how = along_ray(ref, model.centre + ref["t"], projections[k % 2], rng)
                    else:
                        state, how = perturb(ref, rng, 15)
                    states.append(state)
                    hows.append(how)
            for state, how in zip(states, hows, strict=True):
                points = model.instance(state["b"], state["r"], state["t"])
                surf = sample_surface(model.surface(points), model.faces, SURFACE_SAMPLES, seed + 1)
                wins = [window(p, model.centre + state["t"], config) for p in projections]
                out["render"].append(render_windows(model, state, wins, solids[level]))
                out["xray"].append(np.stack([crop_image(x.image, w) for x, w in zip(xr, wins, strict=True)]))
                if all(d is not None for d in degraded):
                    crops = [crop_image(d, w) for d, w in zip(degraded, wins, strict=True)]
                    out["xray_degraded"].append(np.stack(crops))
                out["masd"].append(masd(surf, meshes[level]))
                out["level"].append(LEVELS.index(level))
                out["magnitude"].append(how["magnitude"])
                out["jump"].append(how["jump_mm"] != 0.0)
    n = config.crop_px
    arrays = {
        "xray": np.asarray(out["xray"], np.float16).reshape(-1, 2, n, n),
        "render": np.asarray(out["render"], np.float16).reshape(-1, 2, n, n),
        "masd": np.asarray(out["masd"], np.float32),
        "level": np.asarray(out["level"], np.int64),
        "magnitude": np.asarray(out["magnitude"], np.float32),
        "jump": np.asarray(out["jump"], bool),
    }
    if out["xray_degraded"] and len(out["xray_degraded"]) == len(out["xray"]):
        arrays["xray_degraded"] = np.asarray(out["xray_degraded"], np.float16)
    return arrays


def cache_folder(
    data: Path, config: SimilarityConfig, per_vertebra: int, seed: int, trajectories: int = 0, ray_samples: int = 0
) -> Path:
    if ray_samples:
        key = json.dumps([config.crop_px, config.crop_mm, ray_samples, seed, RAY_VERSION, RAY_MM, RAY_JITTER])
        return Path(data) / f".similarity-ray-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    if trajectories:
        key = json.dumps([config.crop_px, config.crop_mm, trajectories, seed, TRAJECTORY_VERSION, TRAJECTORY_SAMPLES])
        return Path(data) / f".similarity-traj-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    key = json.dumps([config.crop_px, config.crop_mm, per_vertebra, seed, DATA_VERSION])
    return Path(data) / f".similarity-cache-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _job(args: tuple) -> tuple[str, str | None]:
    case_dir, path, config, per_vertebra, seed, trajectories, ray_samples = args
    from ..atomic import atomic_write_npz

    try:
        atomic_write_npz(path, prepare_case(case_dir, config, per_vertebra, seed, trajectories, ray_samples))
    except Exception as exc:  # a broken case is reported and left out, the others are prepared
        return str(case_dir), f"{type(exc).__name__}: {exc}"
    return str(case_dir), None


def prepare(
    data: Path,
    config: SimilarityConfig,
    per_vertebra: int = 8,
    seed: int = 0,
    workers: int = 1,
    trajectories: int = 0,
    ray_samples: int = 0,
) -> tuple[list[Path], list[Path], list[str]]:
    """(training files, validation files, problems): one cached ``.npz`` per case (made where
    missing) of perturbed instances and, with ``trajectories`` > 0, one more of traced fits, with
    ``ray_samples`` > 0 one more of ray samples; every tenth case (by case id) is validation, as for
    the detector."""
    from ..errors import UserError
    from .detector_data import case_dirs, is_validation

    cases = case_dirs(data)
    if not cases:
        raise UserError("holds no data-engine case (case.json)", "run spinedart synth --out DIR first", data)
    jobs, files = [], []
    kinds = [(0, 0)] + ([(trajectories, 0)] if trajectories else []) + ([(0, ray_samples)] if ray_samples else [])
    for traced, ray in kinds:
        cache = cache_folder(data, config, per_vertebra, seed, traced, ray)
        cache.mkdir(parents=True, exist_ok=True)
        for d in cases:
            path = cache / f"{d.name}.npz"
            files.append((d, path))
            if not path.exists():
                jobs.append((d, path, config, per_vertebra, seed, traced, ray))
    problems = []
    if jobs:
        print(f"preparing similarity samples: {len(jobs)} case files ({workers} workers)", file=sys.stderr, flush=True)
        if workers > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(workers) as pool:
                results = list(pool.imap_unordered(_job, jobs))
        else:
            results = [_job(j) for j in jobs]
        problems = [f"{c}: {e}" for c, e in results if e]
        for p in problems:
            print(f"left out {p}", file=sys.stderr, flush=True)
    train = [p for d, p in files if p.exists() and not is_validation(d.name)]
    val = [p for d, p in files if p.exists() and is_validation(d.name)]
    return train, val, problems


def groups_of(magnitude: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Group index (from 0) of each sample of one case file: the instances of one vertebra in one view
    pair — the samples a ranking compares. A case file holds them contiguously: perturbed instances
    start with their reference (magnitude 0), a traced fit's iterates (magnitude −1) are a run of one
    level (two pairs' fits of one level in a row become one group: the same vertebra, other views)."""
    start = np.ones(len(level), bool)
    start[1:] = (magnitude[1:] == 0) | (level[1:] != level[:-1]) | ((magnitude[1:] < 0) != (magnitude[:-1] < 0))
    return np.cumsum(start) - 1


def load_cases(files: list[Path], degraded: str = "extra") -> dict[str, np.ndarray]:
    """The samples of ``files`` in one set of arrays. ``degraded``: "extra" — each degraded window is
    one more sample (the same instance and label); "alternative" — kept beside the clean window as
    ``xray_alt`` (the clean one where a case has none), for training to draw one of the two; "none".
    ``group``: the vertebra-and-pair group of each sample (:func:`groups_of`), unique over files and
    variants."""
    keys = ("xray", "render", "masd", "level", "jump")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in (*keys, "xray_alt", "group")}
    n_groups = 0
    for f in files:
        with np.load(f) as z:
            if len(z["masd"]) == 0:
                continue
            alt = z.get("xray_degraded")
            variants = [z["xray"]] + ([alt] if degraded == "extra" and alt is not None else [])
            groups = groups_of(z["magnitude"], z["level"])
            for x in variants:
                parts["xray"].append(x)
                for k in keys[1:]:
                    parts[k].append(z[k])
                parts["group"].append(groups + n_groups)
                n_groups += int(groups[-1]) + 1
                if degraded == "alternative":
                    parts["xray_alt"].append(alt if alt is not None else z["xray"])
    if not parts["masd"]:
        return {}
    return {k: np.concatenate(v) for k, v in parts.items() if v}
