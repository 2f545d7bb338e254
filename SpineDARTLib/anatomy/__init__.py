"""Anatomy: levels and morphometry, the procedural vertebra generator (healthy and fractured)."""

from .levels import LEVELS, MORPHOMETRY, REGIONS, check_level, default_gauge, region_of
from .phantom import Phantom, density_volume, generate
from .vertebra import FRACTURE_TYPES, PART_NAMES, Fracture, VertebraParams, VertebraSDF, sample_params

__all__ = [
    "FRACTURE_TYPES",
    "LEVELS",
    "MORPHOMETRY",
    "PART_NAMES",
    "REGIONS",
    "Fracture",
    "Phantom",
    "VertebraParams",
    "VertebraSDF",
    "check_level",
    "default_gauge",
    "density_volume",
    "generate",
    "region_of",
    "sample_params",
]
