"""Reading and writing X-rays: DICOM, PNG/TIFF + sidecar, NIfTI/NRRD + sidecar.

Axis convention on disk: PNG/TIFF/DICOM store rows then columns (``image[v, u]``); NIfTI and NRRD
index ``data[i, j]`` with i along the first (column) axis, so they are transposed on read and write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, ImageFileError, UserError
from ..provenance import sha256_file
from . import dicom as _dicom
from .image import XRay, to_line_integral
from .sidecar import Sidecar, read_sidecar, sidecar_path_for, write_sidecar

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED = "DICOM, PNG, TIFF, NIfTI (.nii/.nii.gz) or NRRD"


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(VOLUME_SUFFIXES):
        return "volume"
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(DICOM_SUFFIXES) or _dicom.is_dicom(path):
        return "dicom"
    raise ImageFileError(f"unsupported file type {path.suffix or '(no suffix)'}", f"give a {SUPPORTED} file", path)


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ImageFileError("is a directory, expected an image file", "give one image file per view", path)
    if not path.exists():
        raise ImageFileError("file not found", "check the path", path)
    if path.stat().st_size == 0:
        raise ImageFileError("file is empty", "re-export the image", path)


def _resolve_sidecar(image_path: Path, geometry: str | Path | None, required: bool) -> Sidecar | None:
    if geometry is not None:
        return read_sidecar(geometry)
    candidate = sidecar_path_for(image_path)
    if candidate.exists():
        return read_sidecar(candidate)
    if required:
        raise GeometryError(
            "no geometry for this image",
            f"write {candidate.name} beside it (schema spinedart.xray-geometry/1) or pass --geometry FILE",
            image_path,
        )
    return None


def _read_raster(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK"):
                    raise ImageFileError(
                        f"colour image (mode {im.mode})", "export the X-ray as a grey-level (L or 16-bit) PNG", path
                    )
                arr = np.array(im)
    except UserError:
        raise
    except Exception as exc:  # Pillow/tifffile raise many types on corrupt files
        raise ImageFileError(f"cannot read the image ({exc.__class__.__name__})", "re-export the image", path) from exc
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ImageFileError(
            f"image has shape {arr.shape}, expected one grey-level image", "export one 2-D image", path
        )
    return arr


def _read_volume(path: Path) -> np.ndarray:
    try:
        if path.name.lower().endswith((".nrrd", ".nhdr")):
            import nrrd

            data, _ = nrrd.read(str(path))
        else:
            import nibabel as nib

            data = np.asarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel/pynrrd raise many types on corrupt files
        raise ImageFileError(f"cannot read the volume ({exc.__class__.__name__})", "re-export the file", path) from exc
    data = np.squeeze(np.asarray(data))
    if data.ndim != 2:
        raise ImageFileError(
            f"holds an array of shape {data.shape}, expected a single 2-D X-ray", "export one projection per file", path
        )
    return data.T  # data[i=u, j=v] → image[v, u]


def _intensity_from_sidecar(raw: np.ndarray, sc: Sidecar | None) -> tuple[str, dict[str, Any], list[str]]:
    spec = dict(sc.intensity) if sc is not None and sc.intensity else None
    if spec is None:
        if np.issubdtype(raw.dtype, np.floating):
            return "line_integral", {}, ["no intensity convention given: float pixels taken as line integrals"]
        return (
            "display",
            {"bone_bright": True},
            ["no intensity convention given: taken as a display image, bone bright"],
        )
    conv = spec.pop("convention")
    if conv == "display" and "bone_bright" not in spec:
        spec["bone_bright"] = True
    return conv, spec, []


def read_xray(path: str | Path, geometry: str | Path | None = None) -> XRay:
    """Read one X-ray with its geometry. A sidecar (``--geometry`` or ``<stem>.json``) is
    ``calibrated`` and overrides DICOM tags, which are ``nominal``."""
    path = Path(path)
    _check_file(path)
    kind = _kind(path)
    warnings: list[str] = []
    if kind == "dicom":
        ds = _dicom.read_dicom_dataset(path)
        raw = _dicom.dicom_pixels(ds, path)
        sc = _resolve_sidecar(path, geometry, required=False)
        if sc is not None:
            projection, geometry_kind = sc.projection, sc.geometry_kind
            source = f"sidecar {sc.path}"
            if sc.intensity:
                conv, spec, w = _intensity_from_sidecar(raw, sc)
            else:
                conv, spec, w = _dicom.dicom_intensity(ds, raw)
        else:
            carm, w_geo = _dicom.dicom_carm(ds, path, (raw.shape[1], raw.shape[0]))
            projection, geometry_kind, source = carm.to_projection(), "nominal", "DICOM tags"
            warnings += w_geo
            conv, spec, w = _dicom.dicom_intensity(ds, raw)
        warnings += w
    else:
        raw = _read_raster(path) if kind == "image" else _read_volume(path)
        sc = _resolve_sidecar(path, geometry, required=True)
        projection, geometry_kind, source = sc.projection, sc.geometry_kind, f"sidecar {sc.path}"
        conv, spec, w = _intensity_from_sidecar(raw, sc)
        warnings += w
    if not np.all(np.isfinite(raw)):
        n = int(np.count_nonzero(~np.isfinite(raw)))
        raise ImageFileError(f"image has {n} non-finite pixels (NaN/Inf)", "repair or re-export the image", path)
    keep = {k: spec[k] for k in ("bone_bright", "i0", "scale", "offset") if k in spec}
    image, record = to_line_integral(raw, conv, **keep)
    record.update({k: v for k, v in spec.items() if k not in keep})
    try:
        xr = XRay(
            image,
            projection,
            geometry_kind,
            {
                "path": str(path),
                "sha256": sha256_file(path),
                "format": kind,
                "geometry_source": source,
                "intensity": record,
                "warnings": warnings,
            },
        )
    except UserError as exc:
        raise type(exc)(exc.problem, exc.fix, path) from exc
    return xr


def write_xray(xray: XRay, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write an X-ray (line integrals) and its sidecar atomically.

    PNG: 16-bit with the linear map back to line integrals in the sidecar (``intensity.scale/offset``);
    TIFF, NIfTI, NRRD: float32, exact.
    """
    from ..atomic import atomic_path

    path = Path(path)
    name = path.name.lower()
    img = np.asarray(xray.image, dtype=np.float32)
    intensity: dict[str, Any] = {"convention": "line_integral"}
    with atomic_path(path) as tmp:
        if name.endswith(".png"):
            from PIL import Image

            lo, hi = float(img.min()), float(img.max())
            scale = (hi - lo) / 65535.0 if hi > lo else 1.0
            q = np.clip(np.round((img - lo) / scale), 0, 65535).astype(np.uint16)
            Image.fromarray(q).save(tmp, format="PNG")
            intensity.update(scale=scale, offset=lo)
        elif name.endswith((".tif", ".tiff")):
            import tifffile

            tifffile.imwrite(tmp, img)
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            du, dv = xray.projection.pixel_spacing_mm
            nib.save(nib.Nifti1Image(img.T[:, :, None], np.diag([du, dv, 1.0, 1.0])), str(tmp))
        elif name.endswith(".nrrd"):
            import nrrd

            du, dv = xray.projection.pixel_spacing_mm
            nrrd.write(str(tmp), img.T, {"space directions": np.diag([du, dv])})
        else:
            raise ImageFileError("cannot write this file type", "use .png, .tif, .nii.gz or .nrrd", path)
    write_sidecar(
        sidecar_path_for(path),
        xray.projection,
        geometry_kind=xray.geometry_kind,
        intensity=intensity,
        provenance=provenance,
    )
    return path
