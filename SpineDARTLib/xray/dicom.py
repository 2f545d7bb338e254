"""DICOM X-ray (XA, RF, DX, CR) reading with nominal C-arm geometry, and a writer for test/demo data.

Geometry from tags (always ``nominal``): ImagerPixelSpacing (detector plane; PixelSpacing only when
it is absent — it may be calibrated to the patient plane — with a warning), DistanceSourceToDetector,
DistanceSourceToPatient (source to isocentre), PositionerPrimaryAngle / PositionerSecondaryAngle,
PatientPosition. The isocentre is the world origin. A calibration sidecar overrides all of it.

Intensity per PixelIntensityRelationship: LIN (proportional to the detected intensity, converted by
−ln(I/I0)), LOG (logarithmic: only its sign is fixed so that bone is bright), DISP (display-processed:
not log-transformed; inverted only when bone is dark, judged from PhotometricInterpretation).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, ImageFileError
from ..geometry import CArmGeometry

logging.getLogger("pydicom").setLevel(logging.ERROR)

_GEOMETRY_FIX = "pass a calibration sidecar with --geometry (or <image stem>.json beside the file)"


def is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _float(ds: Any, keyword: str) -> float | None:
    v = ds.get(keyword)
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _pair(ds: Any, keyword: str) -> tuple[float, float] | None:
    v = ds.get(keyword)
    if v is None or len(v) != 2:
        return None
    try:
        a, b = float(v[0]), float(v[1])
    except (TypeError, ValueError):
        return None
    return (a, b) if np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0 else None


def read_dicom_dataset(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # pydicom warns (multi-line, on stderr) about recoverable defects: keep the one-line contract
        # and let the pixel/geometry checks decide whether the file is usable.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ImageFileError("not a readable DICOM file", "export the image as DICOM Part 10", path) from exc
    except (OSError, EOFError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ImageFileError(f"corrupt DICOM file ({exc.__class__.__name__})", "re-export the image", path) from exc


def dicom_pixels(ds: Any, path: Path) -> np.ndarray:
    if "PixelData" not in ds:
        raise ImageFileError("DICOM file has no pixel data", "give the image object, not a report or index", path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageFileError(
            f"DICOM file holds {frames} frames", "export the single frame to plan on (one file per view)", path
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported/corrupt pixel data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise ImageFileError(
            f"cannot decode the pixel data (transfer syntax {ts}: {exc.__class__.__name__})",
            "re-export uncompressed or install a decoder (pylibjpeg, gdcm)",
            path,
        ) from exc
    if arr.ndim != 2:
        raise ImageFileError(
            f"DICOM pixel data has shape {arr.shape}, expected one grey-level image", "export a monochrome image", path
        )
    slope = _float(ds, "RescaleSlope") or 1.0
    intercept = _float(ds, "RescaleIntercept") or 0.0
    return arr.astype(np.float64) * slope + intercept


def dicom_intensity(ds: Any, pixels: np.ndarray) -> tuple[str, dict[str, Any], list[str]]:
    """Choose the conversion to line integrals from the intensity tags."""
    warnings: list[str] = []
    rel = str(ds.get("PixelIntensityRelationship", "") or "").strip().upper()
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    sign_tag = ds.get("PixelIntensityRelationshipSign")
    sign = int(sign_tag) if sign_tag not in (None, "") else None
    bits = int(ds.get("BitsStored", 16) or 16)
    info: dict[str, Any] = {"relationship": rel or None, "sign": sign, "photometric": photometric}
    if rel in ("LIN", "LOG"):
        if sign is None:
            sign = -1 if photometric == "MONOCHROME1" else 1
            warnings.append(f"PixelIntensityRelationshipSign absent: assumed {sign:+d} from {photometric}")
            info["sign_assumed"] = True
        # sign +1: lower values = less X-ray intensity (more attenuation): bone dark.
        if rel == "LIN":
            if sign == -1:  # higher values = less intensity: turn back into intensity first
                return "raw_linear", {"scale": -1.0, "offset": float(2**bits - 1), **info}, warnings
            return "raw_linear", {**info}, warnings
        # LOG: values are a logarithm of intensity; line integral = −value (shifted to ≥ 0).
        if sign == 1:
            return "line_integral", {"scale": -1.0, "offset": float(np.max(pixels)), **info}, warnings
        return "line_integral", {"offset": -float(np.min(pixels)), **info}, warnings
    if rel not in ("", "DISP"):
        warnings.append(f"unknown PixelIntensityRelationship {rel!r}: treated as a display image")
    elif rel == "":
        warnings.append("PixelIntensityRelationship absent: treated as a display image (DISP)")
    # X-ray display convention: bone white. MONOCHROME1 stores white as the lowest value.
    return "display", {"bone_bright": photometric != "MONOCHROME1", **info}, warnings


def dicom_carm(ds: Any, path: Path, image_size: tuple[int, int]) -> tuple[CArmGeometry, list[str]]:
    warnings: list[str] = []
    spacing = _pair(ds, "ImagerPixelSpacing")
    if spacing is None:
        spacing = _pair(ds, "PixelSpacing")
        if spacing is None:
            raise GeometryError("no ImagerPixelSpacing or PixelSpacing tag", _GEOMETRY_FIX, path)
        warnings.append(
            "ImagerPixelSpacing absent: used PixelSpacing as the detector spacing (it may be calibrated to the "
            "patient plane)"
        )
    # DICOM spacing is [row spacing (between rows, dv), column spacing (du)].
    dv, du = spacing
    values = {}
    for kw in (
        "DistanceSourceToDetector",
        "DistanceSourceToPatient",
        "PositionerPrimaryAngle",
        "PositionerSecondaryAngle",
    ):
        values[kw] = _float(ds, kw)
        if values[kw] is None:
            raise GeometryError(f"DICOM tag {kw} is missing or not a number", _GEOMETRY_FIX, path)
    position = str(ds.get("PatientPosition", "") or "").strip().upper()
    if not position:
        position = "HFS"
        warnings.append("PatientPosition absent: assumed head-first supine (HFS)")
    try:
        carm = CArmGeometry(
            primary_angle_deg=values["PositionerPrimaryAngle"],
            secondary_angle_deg=values["PositionerSecondaryAngle"],
            source_isocenter_mm=values["DistanceSourceToPatient"],
            source_detector_mm=values["DistanceSourceToDetector"],
            image_size=image_size,
            pixel_spacing_mm=(du, dv),
            patient_position=position,
        )
    except GeometryError as exc:
        raise GeometryError(exc.problem, _GEOMETRY_FIX, path) from exc
    return carm, warnings


def write_dicom_xray(
    path: str | Path,
    pixels: np.ndarray,
    carm: CArmGeometry | None,
    relationship: str = "LIN",
    sign: int = 1,
    photometric: str = "MONOCHROME2",
    imager_spacing: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a single-frame XA DICOM with C-arm tags (test fixtures, demo data, DRR export)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, XRayAngiographicImageStorage, generate_uid

    from ..atomic import atomic_path

    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint16:
        raise ValueError("write_dicom_xray expects uint16 pixels")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = XRayAngiographicImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "XA"
    ds.PatientName = "SpineDART^Synthetic"
    ds.PatientID = "SPINEDART-SYNTH"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = relationship
    ds.PixelIntensityRelationshipSign = sign
    if carm is not None:
        du, dv = carm.pixel_spacing_mm
        if imager_spacing:
            ds.ImagerPixelSpacing = [dv, du]
        else:
            ds.PixelSpacing = [dv, du]
        ds.DistanceSourceToDetector = carm.source_detector_mm
        ds.DistanceSourceToPatient = carm.source_isocenter_mm
        ds.PositionerPrimaryAngle = carm.primary_angle_deg
        ds.PositionerSecondaryAngle = carm.secondary_angle_deg
        ds.PatientPosition = carm.patient_position
    for k, v in (extra or {}).items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)
