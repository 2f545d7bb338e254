"""Vertebral levels, regions, default cannula gauges and the morphometry table.

Morphometry: ``../shared/research/anatomy.md`` §5 (an engineering synthesis of Panjabi 1991/1992,
Zindrick 1987, Kaur 2016, Lien 2007, Clouthier 2023; lengths in mm, angles in degrees). Population
SD ≈ 8–12 % of the mean for lengths, 3–5° for angles.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

LEVELS = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
REGIONS = {"T1-T4": LEVELS[0:4], "T5-T8": LEVELS[4:8], "T9-T12": LEVELS[8:12], "L1-L5": LEVELS[12:17]}

# Outer diameters (mm) of the cannula gauges (anatomy.md §2).
GAUGE_OD_MM = {11: 3.05, 13: 2.41, 15: 1.83}


@dataclass(frozen=True)
class Morphometry:
    body_width: float
    body_depth: float
    body_height_posterior: float
    pedicle_width: float
    pedicle_height: float
    pedicle_transverse_deg: float  # medial +
    pedicle_sagittal_deg: float
    canal_width: float
    canal_depth: float
    tp_span: float
    sp_length: float


_TABLE = {
    "T1": (28, 17, 17, 8, 8.5, 32, 17, 21.5, 16, 70, 35),
    "T2": (27, 19, 17.6, 6.5, 10, 25, 19, 19.5, 15, 67, 38),
    "T3": (26, 21, 18, 5, 11, 18, 16, 17.5, 15, 61, 40),
    "T4": (27, 23, 18, 4.5, 11, 15, 15, 16.5, 15, 60, 42),
    "T5": (28, 24, 18.5, 4.5, 11, 13, 14, 16, 15, 61, 44),
    "T6": (29, 25, 19, 5, 11, 12, 13, 16, 15, 64, 45),
    "T7": (30, 26, 19.5, 5.5, 12, 11, 12, 16, 15, 64, 45),
    "T8": (31, 27, 20, 6, 12.5, 10, 11, 16, 15, 63, 45),
    "T9": (33, 28, 20.5, 6.5, 13, 9, 10, 16.5, 15.5, 60, 45),
    "T10": (35, 29, 21.5, 7, 14, 6, 10, 17, 16, 58, 44),
    "T11": (39, 31, 23, 8, 16, -1, 9, 18.5, 17, 53, 42),
    "T12": (41, 32, 24, 8, 16, -2, 8, 20, 18, 52, 42),
    "L1": (43, 34, 26, 8.7, 15, 11, 8, 22.5, 17.5, 74, 45),
    "L2": (45, 35, 26, 8.9, 15, 12, 6, 22.5, 16.5, 87, 48),
    "L3": (47, 35, 26, 10.3, 15, 14, 5, 23, 16, 94, 50),
    "L4": (49, 35, 25, 12.9, 15, 18, 4, 24, 16.5, 94, 50),
    "L5": (51, 35, 24, 18, 14, 30, 2, 25.5, 17, 95, 45),
}
MORPHOMETRY = {k: Morphometry(*map(float, v)) for k, v in _TABLE.items()}

# Thoracic spinous-process inclination (caudal, degrees from the transverse plane; Kaur 2016:
# ≈30° at T1, ≈58° at T6, ≈16° at T12), interpolated; lumbar processes are nearly horizontal.
_SP_INCLINATION = {
    "T1": 30,
    "T2": 36,
    "T3": 42,
    "T4": 48,
    "T5": 54,
    "T6": 58,
    "T7": 56,
    "T8": 50,
    "T9": 42,
    "T10": 33,
    "T11": 24,
    "T12": 16,
    "L1": 10,
    "L2": 8,
    "L3": 6,
    "L4": 5,
    "L5": 5,
}


def check_level(level: str) -> str:
    key = str(level).strip().upper()
    if key not in MORPHOMETRY:
        raise UserError(f"unknown vertebral level {level!r}", f"use one of {LEVELS[0]}..{LEVELS[-1]} (e.g. L3)")
    return key


def region_of(level: str) -> str:
    key = check_level(level)
    return next(r for r, levels in REGIONS.items() if key in levels)


def is_thoracic(level: str) -> bool:
    return check_level(level).startswith("T")


def sp_inclination_deg(level: str) -> float:
    return float(_SP_INCLINATION[check_level(level)])


def default_gauge(level: str) -> int:
    """11 G at L1–L5, 13 G at T5–T12, 15 G at T1–T4 (a starting point the user can change)."""
    key = check_level(level)
    if key.startswith("L"):
        return 11
    return 15 if LEVELS.index(key) < 4 else 13


def parse_levels(text: str) -> list[str]:
    """``T9-L2`` → T9, T10, T11, T12, L1, L2; ``L3`` → L3; ``T8,L1`` → both."""
    out: list[str] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part:
            a, b = (check_level(x.strip()) for x in part.split("-", 1))
            i, j = LEVELS.index(a), LEVELS.index(b)
            if i > j:
                raise UserError(f"level range {part!r} runs backwards", f"write it cranial first, e.g. {b}-{a}")
            out.extend(LEVELS[i : j + 1])
        else:
            out.append(check_level(part))
    return list(dict.fromkeys(out))
