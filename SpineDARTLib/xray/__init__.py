"""X-ray images with their geometry: the :class:`XRay` type, readers and writers."""

from .image import XRay, to_line_integral
from .io import read_xray, write_xray
from .sidecar import Sidecar, image_stem, read_sidecar, sidecar_dict, sidecar_path_for, write_sidecar

__all__ = [
    "Sidecar",
    "XRay",
    "image_stem",
    "read_sidecar",
    "read_xray",
    "sidecar_dict",
    "sidecar_path_for",
    "to_line_integral",
    "write_sidecar",
    "write_xray",
]
