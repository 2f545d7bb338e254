"""C-arm parameters → :class:`Projection`.

Frames and rotation order (documented once, tested with worked cases):

- **Table frame**: the RAS frame of a head-first supine (HFS) patient: +x = table's "patient right"
  side, +y = up (towards the ceiling), +z = towards the head end of the table.
- **Reference pose** (primary = secondary = 0): the source is below the table and the detector above
  it: the beam travels along +y (posterior → anterior for a supine patient). The detector read-out
  is the radiological display convention, the image seen from the detector side: column u runs
  along −x (a supine patient's right is on the image's left), row v along −z (head at the top).
- **Primary angle** α (degrees, LAO positive, as DICOM PositionerPrimaryAngle): a right-handed
  rotation about the table's long axis +z; α = +90° puts the detector on a supine patient's left.
- **Secondary angle** β (degrees, cranial positive, as DICOM PositionerSecondaryAngle): then a
  rotation about the *rotated* lateral axis R_z(α)·x̂, tilting the detector towards the head.
  Together: R_carm = R_z(α) · R_x(β) (intrinsic z then x').
- **Patient position** (DICOM PatientPosition) maps the table frame to the patient's RAS frame:
  prone flips antero-posterior and left/right, feet-first flips left/right and head/feet.
  The angles are read as table (C-arm encoder) angles; the patient position turns them into patient
  directions. DICOM defines positioner angles relative to the patient; C-arms report them from their
  encoders, so a DICOM geometry is only ever ``nominal``.
- **Isocentre** in patient RAS mm (default the world origin). The source lies at
  iso − SID·d and the detector centre at iso + (SDD − SID)·d, d the unit beam direction.
- **Detector offset** (mm, along u and v): where the principal ray (the perpendicular from the
  source) meets the detector, relative to the detector's centre.
- **Flips**: ``flip_u`` / ``flip_v`` reverse the column / row read-out direction (a detector that
  stores images left-right or top-bottom mirrored).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import GeometryError
from .projection import Projection

# Table frame → patient RAS for each DICOM PatientPosition (columns: where table x, y, z point
# in the patient's RAS frame).
_PATIENT_POSITIONS: dict[str, np.ndarray] = {
    "HFS": np.diag([1.0, 1.0, 1.0]),
    "HFP": np.diag([-1.0, -1.0, 1.0]),
    "FFS": np.diag([-1.0, 1.0, -1.0]),
    "FFP": np.diag([1.0, -1.0, -1.0]),
    # Decubitus left: lying on the left side (right side up). In the table frame the patient's right
    # points up (+y) and the anterior points to the table's −x; the inverse maps table → patient.
    "HFDL": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    "HFDR": np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}
_FEET_FIRST = np.diag([-1.0, 1.0, -1.0])  # 180° about the table's vertical axis
_PATIENT_POSITIONS["FFDL"] = _PATIENT_POSITIONS["HFDL"] @ _FEET_FIRST
_PATIENT_POSITIONS["FFDR"] = _PATIENT_POSITIONS["HFDR"] @ _FEET_FIRST

PATIENT_POSITIONS = tuple(_PATIENT_POSITIONS)


def patient_from_table(patient_position: str) -> np.ndarray:
    """Rotation taking table-frame vectors to patient RAS for a DICOM PatientPosition code."""
    key = str(patient_position).strip().upper()
    if key not in _PATIENT_POSITIONS:
        raise GeometryError(
            f"unsupported patient position {patient_position!r}",
            f"use one of {', '.join(PATIENT_POSITIONS)}",
        )
    return _PATIENT_POSITIONS[key].copy()


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(a: float) -> np.ndarray:
    """Rotation by ``a`` (radians) about +x."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@dataclass(frozen=True)
class CArmGeometry:
    """Explicit C-arm parameters (all lengths mm, angles degrees)."""

    primary_angle_deg: float
    secondary_angle_deg: float
    source_isocenter_mm: float
    source_detector_mm: float
    image_size: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    detector_offset_mm: tuple[float, float] = (0.0, 0.0)
    flip_u: bool = False
    flip_v: bool = False
    patient_position: str = "HFS"
    isocenter_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        nums = [self.primary_angle_deg, self.secondary_angle_deg, self.source_isocenter_mm, self.source_detector_mm]
        nums += list(self.pixel_spacing_mm) + list(self.detector_offset_mm) + list(self.isocenter_mm)
        if not np.all(np.isfinite(np.asarray(nums, dtype=float))):
            raise GeometryError("C-arm parameters contain NaN or infinite values", "give finite numbers")
        if self.source_detector_mm <= 0 or self.source_isocenter_mm <= 0:
            raise GeometryError(
                "source-detector and source-isocentre distances must be positive", "give distances in mm"
            )
        if self.source_isocenter_mm >= self.source_detector_mm:
            raise GeometryError(
                f"source-isocentre distance {self.source_isocenter_mm} mm is not less than the source-detector "
                f"distance {self.source_detector_mm} mm",
                "the isocentre lies between source and detector: check the two distances",
            )
        patient_from_table(self.patient_position)  # validates the code

    def beam_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors in patient RAS: detector u axis, v axis, beam direction (source → detector)."""
        rot = _rot_z(np.radians(self.primary_angle_deg)) @ rot_x(np.radians(self.secondary_angle_deg))
        A = patient_from_table(self.patient_position)
        u = A @ rot @ np.array([-1.0, 0.0, 0.0])
        v = A @ rot @ np.array([0.0, 0.0, -1.0])
        d = A @ rot @ np.array([0.0, 1.0, 0.0])
        if self.flip_u:
            u = -u
        if self.flip_v:
            v = -v
        return u, v, d

    @property
    def source_mm(self) -> np.ndarray:
        _, _, d = self.beam_frame()
        return np.asarray(self.isocenter_mm, float) - self.source_isocenter_mm * d

    @property
    def detector_center_mm(self) -> np.ndarray:
        _, _, d = self.beam_frame()
        return np.asarray(self.isocenter_mm, float) + (self.source_detector_mm - self.source_isocenter_mm) * d

    def to_projection(self) -> Projection:
        u, v, d = self.beam_frame()
        w, h = self.image_size
        du, dv = self.pixel_spacing_mm
        cu = (w - 1) / 2.0 + self.detector_offset_mm[0] / du
        cv = (h - 1) / 2.0 + self.detector_offset_mm[1] / dv
        K = np.array([[self.source_detector_mm / du, 0.0, cu], [0.0, self.source_detector_mm / dv, cv], [0, 0, 1.0]])
        R = np.vstack([u, v, d])
        t = -R @ self.source_mm
        return Projection.from_KRt(K, R, t, self.image_size, self.pixel_spacing_mm, np.asarray(self.isocenter_mm))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("image_size", "pixel_spacing_mm", "detector_offset_mm", "isocenter_mm"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CArmGeometry:
        kw = dict(d)
        for k in ("image_size", "pixel_spacing_mm", "detector_offset_mm", "isocenter_mm"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def from_carm(
    primary_angle_deg: float,
    secondary_angle_deg: float,
    source_isocenter_mm: float,
    source_detector_mm: float,
    image_size: tuple[int, int],
    pixel_spacing_mm: tuple[float, float] | None = None,
    detector_size_mm: tuple[float, float] | None = None,
    detector_offset_mm: tuple[float, float] = (0.0, 0.0),
    flip_u: bool = False,
    flip_v: bool = False,
    patient_position: str = "HFS",
    isocenter_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Projection:
    """Projection of a C-arm view (see the module docstring for frames and rotation order).

    Give the detector sampling either as ``pixel_spacing_mm`` or as ``detector_size_mm`` (spacing =
    size / pixels).
    """
    if (pixel_spacing_mm is None) == (detector_size_mm is None):
        raise GeometryError(
            "give exactly one of pixel_spacing_mm and detector_size_mm", "drop one of the two detector descriptions"
        )
    if pixel_spacing_mm is None:
        pixel_spacing_mm = (detector_size_mm[0] / image_size[0], detector_size_mm[1] / image_size[1])
    return CArmGeometry(
        primary_angle_deg,
        secondary_angle_deg,
        source_isocenter_mm,
        source_detector_mm,
        tuple(image_size),
        tuple(pixel_spacing_mm),
        tuple(detector_offset_mm),
        flip_u,
        flip_v,
        patient_position,
        tuple(isocenter_mm),
    ).to_projection()
