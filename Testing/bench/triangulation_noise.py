"""Benchmark: 3D triangulation error vs 2D landmark noise and the angle between the two views.

Protocol p1 geometry (SID 620 mm, SDD 1020 mm, 300 mm detector at 512 px). Points uniform in a
±40 mm cube around the isocentre; Gaussian noise of sigma (mm at the detector) on both views.

    python Testing/bench/triangulation_noise.py [--seed 1000003] [--n 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from SpineDARTLib.geometry import from_carm, triangulate


def run(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    spacing = 300 / 512
    rows = []
    for sep in (90, 45, 20, 10):
        a = from_carm(0, 0, 620, 1020, (512, 512), pixel_spacing_mm=(spacing, spacing))
        b = from_carm(sep, 0, 620, 1020, (512, 512), pixel_spacing_mm=(spacing, spacing))
        X = rng.uniform(-40, 40, size=(n, 3))
        for sigma_mm in (0.5, 1.0, 2.0):
            sigma_px = sigma_mm / spacing
            obs = [p.project(X) + rng.normal(size=(n, 2)) * sigma_px for p in (a, b)]
            t0 = time.perf_counter()
            tri = triangulate([a, b], obs)
            dt = time.perf_counter() - t0
            err = np.linalg.norm(tri.points_mm - X, axis=1)
            rows.append(
                {
                    "separation_deg": sep,
                    "sigma_mm_detector": sigma_mm,
                    "rms_3d_mm": round(float(np.sqrt(np.mean(err**2))), 3),
                    "p95_3d_mm": round(float(np.percentile(err, 95)), 3),
                    "rms_reprojection_px": round(float(np.nanmean(tri.rms_px)), 3),
                    "us_per_point": round(dt / n * 1e6, 1),
                }
            )
    return {
        "benchmark": "triangulation_noise",
        "seed": seed,
        "n": n,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1_000_003)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = run(args.seed, args.n)
    print(f"{'sep':>4} {'sigma':>6} {'rms3d':>7} {'p95':>7} {'reproj':>7} {'us/pt':>6}")
    for r in res["rows"]:
        print(
            f"{r['separation_deg']:>4} {r['sigma_mm_detector']:>6} {r['rms_3d_mm']:>7} {r['p95_3d_mm']:>7} "
            f"{r['rms_reprojection_px']:>7} {r['us_per_point']:>6}"
        )
    if args.json:
        print(json.dumps(res))
