"""The X-ray geometry sidecar (``<image stem>.json``, schema ``spinedart.xray-geometry/1``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json
from ..errors import GeometryError
from ..geometry import CArmGeometry, Projection
from ..schemas import XRAY_GEOMETRY_V1, load_json, validate

# A P matrix and C-arm parameters given together must agree to this many pixels.
_CONSISTENCY_PX = 0.5


@dataclass(frozen=True)
class Sidecar:
    projection: Projection
    geometry_kind: str
    intensity: dict[str, Any] | None
    carm: CArmGeometry | None
    path: Path | None


_IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".png", ".tiff", ".tif", ".dcm", ".dicom")


def image_stem(image_path: str | Path) -> str:
    """File name without its image extension: ``scan.nii.gz`` → ``scan``."""
    name = Path(image_path).name
    for ext in _IMAGE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def sidecar_path_for(image_path: str | Path) -> Path:
    """``scan.png`` → ``scan.json``; ``scan.nii.gz`` → ``scan.json``."""
    p = Path(image_path)
    return p.with_name(image_stem(p) + ".json")


def parse_sidecar(obj: dict[str, Any], path: str | Path | None = None) -> Sidecar:
    validate(obj, XRAY_GEOMETRY_V1, path)
    size = tuple(obj["image_size"])
    spacing = tuple(obj["pixel_spacing_mm"])
    try:
        carm = None
        if "carm" in obj:
            c = dict(obj["carm"])
            carm = CArmGeometry.from_dict({**c, "image_size": size, "pixel_spacing_mm": spacing})
        proj = None
        if "P" in obj:
            proj = Projection(np.asarray(obj["P"], float), size, spacing, obj.get("isocenter_mm"))
    except GeometryError as exc:
        raise GeometryError(exc.problem, exc.fix, path) from exc
    if carm is not None:
        from_carm = carm.to_projection()
        if proj is not None:
            w, h = size
            probe = np.array([[0, 0, 0], [60, 0, 0], [0, 60, 0], [0, 0, 60], [-40, 30, -50]], float)
            probe = probe + np.asarray(carm.isocenter_mm, float)
            err = proj.reprojection_distance(from_carm, probe)
            if err > _CONSISTENCY_PX:
                raise GeometryError(
                    f"the P matrix and the C-arm parameters disagree by {err:.1f} px",
                    "keep only the one that was calibrated (P or carm)",
                    path,
                )
            if proj.isocenter_mm is None:
                proj = Projection(proj.P, size, spacing, np.asarray(carm.isocenter_mm, float))
        else:
            proj = from_carm
    if "source_mm" in obj.get("provenance", {}):
        given = np.asarray(obj["provenance"]["source_mm"], float)
        if np.linalg.norm(given - proj.source_mm) > 1.0:
            raise GeometryError(
                f"provenance.source_mm {given.tolist()} contradicts the source implied by P "
                f"{np.round(proj.source_mm, 1).tolist()}",
                "correct or remove provenance.source_mm",
                path,
            )
    return Sidecar(
        proj, obj.get("geometry", "calibrated"), obj.get("intensity"), carm, None if path is None else Path(path)
    )


def read_sidecar(path: str | Path) -> Sidecar:
    return parse_sidecar(load_json(path, XRAY_GEOMETRY_V1), path)


def sidecar_dict(
    projection: Projection,
    geometry_kind: str = "calibrated",
    intensity: dict[str, Any] | None = None,
    carm: CArmGeometry | None = None,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {"schema": XRAY_GEOMETRY_V1, "geometry": geometry_kind}
    d.update(projection.to_dict())
    if carm is not None:
        c = carm.to_dict()
        for k in ("image_size", "pixel_spacing_mm"):
            c.pop(k)
        d["carm"] = c
    if intensity is not None:
        d["intensity"] = intensity
    if provenance is not None:
        d["provenance"] = provenance
    return d


def write_sidecar(path: str | Path, projection: Projection, **kw: Any) -> Path:
    d = sidecar_dict(projection, **kw)
    validate(d, XRAY_GEOMETRY_V1, path)
    return atomic_write_json(path, d)
