"""A case on disk: CT-like volume, vertebra label map, per-vertebra ground truth and meshes, and
simulated views with their sidecars and 2-D labels.

    CASE/ct.nii.gz           int16 HU            CASE/labels.nii.gz   uint8, TotalSegmentator-v2 ids
    CASE/case.json           spinedart.case/1    CASE/meshes/<level>.vtp  (LPS on disk, part labels)
    CASE/views/<name>.tif    float32 line integrals, with <name>.json (xray-geometry/1 sidecar)
    CASE/views/<name>.labels.json  spinedart.view-labels/1: per vertebra instance, the 10 landmarks
                                   and the trajectories in pixels with an in-field-of-view flag
    CASE/views/<name>.masks.npz    instance masks (n, H, W), bit-packed; overlapping instances kept apart

Every file is written atomically; gzip and zip members carry fixed timestamps so the same seed
gives byte-identical files (JSON differs only in provenance.time_utc).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write_json, atomic_write_npz
from ..labelmaps import TOTALSEG_V2
from ..provenance import provenance, sha256_file
from ..schemas import CASE_V1, VIEW_LABELS_V1, validate
from .views import View, instance_masks, project_points, render_drr

HU_RANGE = (-1024, 3071)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> dict[str, str]:
    import nibabel as nib

    with atomic_path(path, keep_name=True) as tmp:
        img = nib.Nifti1Image(array, affine)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(tmp))  # nibabel writes .gz with mtime 0: deterministic
    return {"path": path.name, "sha256": sha256_file(path)}


def write_masks(path: Path, masks: np.ndarray) -> None:
    """Bit-packed (n, H, W) masks in an npz with fixed timestamps."""
    packed = np.packbits(masks.astype(bool), axis=-1)
    atomic_write_npz(path, {"masks_packed": packed, "shape": np.array(masks.shape, np.int64)})


def read_masks(path: str | Path) -> np.ndarray:
    """The (n, H, W) bool masks written by :func:`write_masks`."""
    with np.load(path) as z:
        n, h, w = (int(x) for x in z["shape"])
        return np.unpackbits(z["masks_packed"], axis=-1, count=w).astype(bool).reshape(n, h, w)


def vertebra_record(level: str, annotation, target: bool, truncated: bool, fractured: bool, **extra) -> dict:
    gt = annotation.to_dict()  # the rounding vertebra.json uses too
    return {
        "level": level,
        "label_id": TOTALSEG_V2[level],
        "target": bool(target),
        "truncated": bool(truncated),
        "fractured": bool(fractured),
        "landmarks": gt["landmarks"],
        "trajectories": gt["trajectories"],
        "pedicle_width_mm": gt["pedicle_width_mm"],
        **extra,
    }


def write_views(
    case_dir: Path,
    hu: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    views: list[View],
    vertebrae: list[dict],
    seed: int = 0,
    degraded: bool = False,
    randomized: bool = False,
) -> list[dict[str, Any]]:
    """Render every view, write image + sidecar + 2-D labels + masks; return the case's view list.

    ``degraded``: also write the protocol's ``-degraded`` image of each view under
    ``views-degraded/`` (same geometry and labels). ``randomized``: the written image is domain-
    randomised (training data); masks and pixel labels follow its distortion."""
    from ..xray import XRay, write_xray
    from .augment import degrade, randomize

    vdir = case_dir / "views"
    vdir.mkdir(parents=True, exist_ok=True)
    ids = [v["label_id"] for v in vertebrae]
    out = []
    for n_view, view in enumerate(views):
        image = clean = render_drr(hu, affine, view.projection)
        masks = instance_masks(labels, affine, ids, view.projection)
        warp = None
        record: dict[str, Any] = {"simulated": "diffdrr"}
        if randomized:
            image, masks, warp, record["randomization"] = randomize(
                image, np.random.default_rng([int(seed), n_view, 31]), masks
            )
        write_xray(XRay(image, view.projection), vdir / f"{view.name}.tif", provenance=record)
        write_masks(vdir / f"{view.name}.masks.npz", masks)
        entry = {}
        if degraded:
            ddir = case_dir / "views-degraded"
            ddir.mkdir(exist_ok=True)
            img_d, rec_d = degrade(clean, np.random.default_rng([int(seed), n_view, 37]))
            write_xray(
                XRay(img_d, view.projection),
                ddir / f"{view.name}.tif",
                provenance={"simulated": "diffdrr", "degraded": rec_d},
            )
            entry["degraded_image"] = f"views-degraded/{view.name}.tif"

        def project(points: dict[str, np.ndarray], projection=view.projection, warp=warp) -> dict[str, Any]:
            res = project_points(projection, points)
            if warp is not None:  # randomised images are distorted: so are their pixel labels
                for r in res.values():
                    r["uv"] = [round(float(x), 3) for x in warp.forward(np.asarray(r["uv"]))]
            return res

        instances = []
        for k, v in enumerate(vertebrae):
            traj = {
                side: project({n: np.asarray(t[n]) for n in ("entry", "target")})
                for side, t in v["trajectories"].items()
            }
            instances.append(
                {
                    "level": v["level"],
                    "label_id": v["label_id"],
                    "mask_index": k,
                    "mask_pixels": int(masks[k].sum()),
                    "landmarks": project({n: np.asarray(p) for n, p in v["landmarks"].items()}),
                    "trajectories": traj,
                }
            )
        doc = {
            "schema": VIEW_LABELS_V1,
            "image_size": list(view.projection.image_size),
            "view": view.name,
            "pair": view.pair,
            "carm": view.carm.to_dict(),
            "randomization": record.get("randomization"),
            "instances": instances,
        }
        validate(doc, VIEW_LABELS_V1, vdir / f"{view.name}.labels.json")
        atomic_write_json(vdir / f"{view.name}.labels.json", doc)
        out.append(
            {
                "name": view.name,
                "pair": view.pair,
                "image": f"views/{view.name}.tif",
                "sidecar": f"views/{view.name}.json",
                "labels": f"views/{view.name}.labels.json",
                "masks": f"views/{view.name}.masks.npz",
                **entry,
            }
        )
    return out


def write_case_json(case_dir: Path, doc: dict[str, Any]) -> dict[str, Any]:
    doc = {"schema": CASE_V1, **doc, "provenance": provenance(seed=doc.get("seed"))}
    validate(doc, CASE_V1, case_dir / "case.json")
    atomic_write_json(case_dir / "case.json", doc)
    return doc
