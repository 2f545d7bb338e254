"""The :class:`XRay` type and the explicit conversion to the line-integral convention."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, ImageFileError
from ..geometry import Projection

GEOMETRY_KINDS = ("nominal", "calibrated")
CONVENTIONS = ("line_integral", "raw_linear", "display")


@dataclass(eq=False)
class XRay:
    """A float32 image in the line-integral convention (bone bright) with its projection.

    ``image[v, u]``: row v, column u, matching the projection's pixel convention.
    ``geometry_kind`` is ``nominal`` (from acquisition tags) or ``calibrated`` (a calibration
    sidecar). ``provenance`` records the file, its hash, the intensity conversion and any warning.
    """

    image: np.ndarray
    projection: Projection
    geometry_kind: str = "calibrated"
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.provenance.get("path")
        img = np.asarray(self.image)
        if img.ndim != 2:
            raise ImageFileError(f"image has {img.ndim} dimensions, expected a 2-D X-ray", "give one 2-D image", where)
        if not np.issubdtype(img.dtype, np.number):
            raise ImageFileError(f"image pixels are {img.dtype}, not numbers", "give a grey-level image", where)
        img = img.astype(np.float32, copy=False)
        if not np.all(np.isfinite(img)):
            n = int(np.count_nonzero(~np.isfinite(img)))
            raise ImageFileError(f"image has {n} non-finite pixels (NaN/Inf)", "repair or re-export the image", where)
        h, w = img.shape
        if (w, h) != tuple(self.projection.image_size):
            gw, gh = self.projection.image_size
            raise GeometryError(
                f"image is {w}x{h} pixels but its geometry describes {gw}x{gh}",
                "give the geometry of this image (image_size is [width, height])",
                where,
            )
        if self.geometry_kind not in GEOMETRY_KINDS:
            raise GeometryError(f"unknown geometry kind {self.geometry_kind!r}", "use nominal or calibrated", where)
        self.image = img

    @property
    def path(self) -> Path | None:
        p = self.provenance.get("path")
        return None if p is None else Path(p)

    def summary(self) -> dict[str, Any]:
        s = self.projection.summary()
        s["geometry"] = self.geometry_kind
        s["intensity"] = self.provenance.get("intensity", {}).get("conversion")
        s["warnings"] = list(self.provenance.get("warnings", []))
        return s


def to_line_integral(
    raw: np.ndarray,
    convention: str,
    bone_bright: bool | None = None,
    i0: float | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Convert stored pixels to the line-integral convention and say exactly how.

    - ``line_integral``: ``value = raw·scale + offset`` (already attenuation, bone bright);
    - ``raw_linear``: detector intensity, ``value = −ln(I / I0)`` with I = raw·scale + offset and
      I0 the given open-field intensity or, if absent, the image's 99.9th percentile (recorded);
    - ``display``: a display-processed image, linear in its values; inverted only when bone is dark.
      Not log-transformed: the display chain already compressed it.
    """
    x = np.asarray(raw, dtype=np.float64) * scale + offset
    record: dict[str, Any] = {"convention": convention, "scale": scale, "offset": offset}
    if convention == "line_integral":
        out = x
        record["conversion"] = "identity (already line integrals)"
    elif convention == "raw_linear":
        if i0 is None:
            i0 = float(np.percentile(x, 99.9))
            record["i0_source"] = "99.9th percentile of the image"
        else:
            record["i0_source"] = "given"
        if not np.isfinite(i0) or i0 <= 0:
            raise ImageFileError("open-field intensity I0 is not positive", "give intensity.i0 in the sidecar")
        floor = i0 * 1e-6
        out = -np.log(np.maximum(x, floor) / i0)
        record["i0"] = float(i0)
        record["conversion"] = "-ln(I / I0)"
    elif convention == "display":
        if bone_bright is None:
            raise ValueError("display convention needs bone_bright")
        if bone_bright:
            out = x
            record["conversion"] = "identity (display image, bone bright)"
        else:
            out = float(x.max()) - x
            record["conversion"] = "inverted (display image, bone dark): max - value"
        record["bone_bright"] = bool(bone_bright)
    else:
        raise ValueError(f"unknown convention {convention!r}")
    return out.astype(np.float32), record
