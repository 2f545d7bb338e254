"""The learned similarity on held-out cases (issue 12 §3-4): does its prediction rank instances by
their true MASD, and does descending it move an instance towards the truth?

.venv/bin/python Testing/bench/similarity_eval.py --weights W --cases DIR [DIR ...] --out R.json
    [--per-vertebra 8] [--descent 12] [--seed 0] [--trajectories 2]

For every case folder (data-engine or real; never one the network was trained on): the samples of
:mod:`SpineDARTLib.nets.similarity_data` (instances around the one initialised from the true
landmarks, clean and degraded windows) → Spearman ρ of predicted vs true MASD, median relative
error, and ρ within each vertebra and pair (the order a fit descends); with ``--trajectories N`` also
on the iterates of N traced fits per pair (what a fit visits).
Then the descent check: per vertebra (up to ``--descent`` of them), a start exactly 5 mm
and 5° off the reference (seeded directions), 40 Adam steps on the predicted MASD alone (pose and
the first ``--modes`` shape modes, default 5) → true MASD before and after; the same starts descended on 1 − gradient
correlation (the analytic term, same steps) as the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from SpineDARTLib.anatomy.levels import LEVELS  # noqa: E402
from SpineDARTLib.fit.learned import LearnedTerm  # noqa: E402
from SpineDARTLib.fit.similarity import gradient_correlation  # noqa: E402
from SpineDARTLib.fit.similarity_net import load_similarity  # noqa: E402
from SpineDARTLib.fit.solid import Solid  # noqa: E402
from SpineDARTLib.nets.similarity_data import (  # noqa: E402
    SURFACE_SAMPLES,
    load_cases,
    masd,
    prepare_case,
    reference_instance,
)
from SpineDARTLib.nets.similarity_train import predict, rank_metrics  # noqa: E402
from SpineDARTLib.render.renderer import SplatRenderer  # noqa: E402

STEPS = 40


def _reference(case_dir: Path, level: str, views):
    from SpineDARTLib.ssm.io import model_for_level

    doc = json.loads((case_dir / "case.json").read_text())
    vert = next(v for v in doc["vertebrae"] if v["level"] == level)
    model = model_for_level(level)
    return model, reference_instance(model, level, [x.projection for x in views], vert["landmarks"]), vert


def _start(ref, rng):
    from scipy.spatial.transform import Rotation

    d = rng.normal(size=3)
    axis = rng.normal(size=3)
    r = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.radians(5.0)) * Rotation.from_rotvec(ref["r"])
    return {"b": ref["b"].copy(), "r": r.as_rotvec(), "t": ref["t"] + 5.0 * d / np.linalg.norm(d)}


def _true_masd(model, state, gt_points, seed):
    from SpineDARTLib.surface import sample_surface

    pts = model.instance(state["b"], state["r"], state["t"])
    return masd(sample_surface(model.surface(pts), model.faces, SURFACE_SAMPLES, seed), gt_points)


def _descend(objective, state, modes: int = 5):
    p = {k: torch.tensor(np.asarray(state[k], np.float32), requires_grad=True) for k in "brt"}
    opt = torch.optim.Adam([{"params": [p["t"]], "lr": 0.5}, {"params": [p["r"]], "lr": 0.01},
                            {"params": [p["b"]], "lr": 0.05}])  # fmt: skip
    for _ in range(STEPS):
        opt.zero_grad()
        objective(p).backward()
        p["b"].grad[modes:] = 0.0
        opt.step()
    return {k: v.detach().numpy().astype(float) for k, v in p.items()}


def _gc_objective(model, xr, start, size: int = 256, margin_px: int = 20):
    """1 − gradient correlation of the instance's rendering with each whole view (at ``size``²),
    inside a box around the starting instance: the analytic term of the fit, as a baseline."""
    solid, renderer = Solid(model), SplatRenderer()
    projs = [x.projection.resized((size, size)) for x in xr]
    P = torch.as_tensor(np.stack([q.P for q in projs]), dtype=torch.float32)
    area = torch.nn.functional.interpolate
    imgs = [
        area(torch.as_tensor(x.image, dtype=torch.float32)[None, None], (size, size), mode="area")[0, 0] for x in xr
    ]
    pts = model.instance(start["b"], start["r"], start["t"])
    rois = []
    for q in projs:
        uv = q.project(pts)
        lo = np.floor(uv.min(0) - margin_px).clip(0, size - 1).astype(int)
        hi = np.ceil(uv.max(0) + margin_px).clip(0, size - 1).astype(int)
        roi = torch.zeros(size, size)
        roi[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = 1
        rois.append(roi)
    var = torch.full((len(solid),), solid.variance)

    def objective(p):
        means, _ = solid.place(p["b"], p["r"], p["t"])
        im = renderer.render(means, var, solid.mass, P, (size, size)).images
        return sum(1 - gradient_correlation(im[k], imgs[k], rois[k]) for k in range(2)) / 2

    return objective


def view_pairs(doc: dict) -> list[tuple[tuple[str, int], list[dict]]]:
    """A case's views grouped by (target, pair), in sorted order."""
    pairs: dict[tuple[str, int], list] = {}
    for v in doc["views"]:
        pairs.setdefault((v.get("target") or "", int(v.get("pair", 0))), []).append(v)
    return sorted(pairs.items())


def gt_points(case_dir: Path, vert: dict) -> np.ndarray:
    """The true vertebra's surface samples, as the MASD labels use them."""
    from SpineDARTLib.mesh_io import read_mesh
    from SpineDARTLib.surface import sample_surface

    v, f = read_mesh(case_dir / vert["mesh"]["path"])[:2]
    return sample_surface(v, f, SURFACE_SAMPLES, 0)


def descent_check(weights: Path, case_dir: Path, n: int, rng: np.random.Generator, modes: int = 5) -> list[dict]:
    from SpineDARTLib.xray import read_xray

    doc = json.loads((case_dir / "case.json").read_text())
    rows = []
    for (target, _), views in view_pairs(doc):
        if len(views) != 2 or len(rows) >= n:
            continue
        xr = [read_xray(case_dir / v["image"], case_dir / v["sidecar"]) for v in views]
        labels = [json.loads((case_dir / v["labels"]).read_text()) for v in views]
        seen = [{i["level"] for i in lab["instances"] if i["mask_pixels"] >= 200} for lab in labels]
        levels = [target] if target else [lv for lv in LEVELS if all(lv in s for s in seen)]
        for level in levels:
            vert = next((v for v in doc["vertebrae"] if v["level"] == level), None)
            if vert is None or vert.get("truncated") or len(rows) >= n:
                continue
            model, ref, vert = _reference(case_dir, level, xr)
            gt = gt_points(case_dir, vert)
            start = _start(ref, rng)
            term = LearnedTerm([model], [x.image for x in xr], [x.projection for x in xr], weights, "cpu")
            learned = _descend(lambda p, term=term: term([p]), start, modes)
            analytic = _descend(_gc_objective(model, xr, start), start, modes)
            rows.append({"case": case_dir.name, "level": level,
                         "masd_ref": _true_masd(model, ref, gt, 1), "masd_start": _true_masd(model, start, gt, 1),
                         "masd_learned": _true_masd(model, learned, gt, 1),
                         "masd_analytic": _true_masd(model, analytic, gt, 1)})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--cases", type=Path, nargs="+", required=True, help="case folders (each with a case.json)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-vertebra", type=int, default=8)
    ap.add_argument("--descent", type=int, default=12, help="vertebrae of the descent check (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", type=int, default=5, help="shape modes free in the descent (0: pose only)")
    ap.add_argument("--no-rank", action="store_true", help="only the descent check")
    ap.add_argument(
        "--trajectories",
        type=int,
        default=0,
        help="also rank the iterates of this many traced fits per pair (gt-noisy evidence)",
    )
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model, card = load_similarity(a.weights)
    rng = np.random.default_rng(a.seed)
    report = {"weights_sha256": card["weights_sha256"], "seed": a.seed, "modes": a.modes, "sets": {}, "descent": []}
    t0 = time.perf_counter()
    for case in [] if a.no_rank else a.cases:
        kinds = [("", 0)] + ([("fit iterates, ", a.trajectories)] if a.trajectories else [])
        for kind, traced in kinds:
            arrays = prepare_case(case, model.config, a.per_vertebra, a.seed, traced)
            if len(arrays["masd"]) == 0:
                continue
            cache = a.out.parent / f"{case.name}-samples{'-traced' if traced else ''}.npz"
            np.savez(cache, **arrays)
            for variant, degraded in ((f"{kind}clean", "none"), (f"{kind}with degraded", "extra")):
                s = load_cases([cache], degraded=degraded)
                pred = predict(model, s)
                report["sets"][f"{case.name} {variant}"] = {"n": len(pred), **rank_metrics(pred, s["masd"], s["group"]),
                    "true_masd_median": float(np.median(s["masd"]))}  # fmt: skip
                print(variant, case.name, report["sets"][f"{case.name} {variant}"], file=sys.stderr, flush=True)
    left = a.descent
    for case in a.cases:
        if left <= 0:
            break
        rows = descent_check(a.weights, case, left, rng, a.modes)
        report["descent"] += rows
        left -= len(rows)
    d = report["descent"]
    if d:
        report["descent_summary"] = {
            "n": len(d),
            "start_masd_median": float(np.median([r["masd_start"] for r in d])),
            "learned_improved": float(np.mean([r["masd_learned"] < r["masd_start"] for r in d])),
            "learned_masd_median": float(np.median([r["masd_learned"] for r in d])),
            "analytic_improved": float(np.mean([r["masd_analytic"] < r["masd_start"] for r in d])),
            "analytic_masd_median": float(np.median([r["masd_analytic"] for r in d])),
            "reference_masd_median": float(np.median([r["masd_ref"] for r in d])),
        }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    a.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report.get("descent_summary", {}), indent=1))
    for k, v in report["sets"].items():
        print(f"{k}: n {v['n']}, Spearman {v.get('spearman', float('nan')):.3f} "
              f"(within a vertebra {v.get('spearman_within', float('nan')):.3f}), "
              f"median rel. error {v.get('median_rel_error', float('nan')):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
