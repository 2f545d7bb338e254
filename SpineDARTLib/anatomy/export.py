"""Writing a generated vertebra: mesh (LPS on disk), density volume (NIfTI) and ``vertebra.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..atomic import atomic_path, atomic_write_json
from ..provenance import provenance, sha256_file
from ..schemas import VERTEBRA_V1, validate
from .landmarks import annotate_mesh
from .phantom import Phantom, density_volume
from .vertebra import PART_NAMES


def write_phantom(ph: Phantom, out_dir: str | Path, volume_spacing_mm: float = 0.5) -> dict[str, Any]:
    """Write ``vertebra.vtp`` (part labels), ``vertebra.stl``, ``density.nii.gz`` (HU) and
    ``vertebra.json`` (landmarks and trajectories by rule); returns the JSON document."""
    import nibabel as nib

    from ..mesh_io import write_mesh

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_mesh(out / "vertebra.vtp", ph.vertices, ph.faces, labels=ph.labels)
    write_mesh(out / "vertebra.stl", ph.vertices, ph.faces)
    hu, affine = density_volume(ph, spacing_mm=volume_spacing_mm)
    with atomic_path(out / "density.nii.gz") as tmp:
        img = nib.Nifti1Image(hu, affine)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(tmp))
    ann = annotate_mesh(ph.vertices, ph.faces).to_dict()
    files = {name: {"sha256": sha256_file(out / name)} for name in ("vertebra.vtp", "vertebra.stl", "density.nii.gz")}
    files["vertebra.vtp"]["coordinates"] = "LPS (Slicer SPACE=LPS marker); point data 'part' indexes part_names"
    files["density.nii.gz"]["units"] = "HU; partial-volume occupancy x (cortical | cancellous | PMMA), background 0"
    pr = ph.params
    doc = {
        "schema": VERTEBRA_V1,
        "level": pr.level,
        "seed": pr.seed,
        "healthy": pr.fracture is None and not pr.cemented,
        "out_of_family": pr.warp_mm > 0,
        "parameters": pr.to_dict(),
        "landmarks": ann["landmarks"],
        "trajectories": ann["trajectories"],
        "pedicle_width_mm": ann["pedicle_width_mm"],
        "anatomical_frame": ann["frame"],
        "annotation_warnings": ann["warnings"],
        "part_names": list(PART_NAMES),
        "mesh": {"vertices": int(len(ph.vertices)), "faces": int(len(ph.faces)), "volume_mm3": _volume(ph)},
        "files": files,
        "provenance": provenance(seed=pr.seed),
    }
    validate(doc, VERTEBRA_V1, out / "vertebra.json")
    atomic_write_json(out / "vertebra.json", doc)
    return doc


def _volume(ph: Phantom) -> float:
    from ..meshing import signed_volume

    return round(float(signed_volume(ph.vertices, ph.faces)), 1)


__all__ = ["write_phantom"]
