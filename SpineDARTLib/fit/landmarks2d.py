"""2-D vertebra evidence per view (``spinedart.landmarks-2d/1``): the anatomical landmarks and the
instance centroid of each vertebra, in pixels of that view's image. The detector writes it; a user
can too (the Slicer module's manual landmarks); the benchmark's ``gt-noisy`` mode builds it from
ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json
from ..errors import UserError
from ..schemas import LANDMARKS_2D_V1, load_json, validate


@dataclass
class VertebraEvidence:
    """One vertebra in one view: landmark name → (u, v) px, optional confidences, optional centroid."""

    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)
    centroid: np.ndarray | None = None

    def to_dict(self, level: str) -> dict[str, Any]:
        d: dict[str, Any] = {"level": level, "landmarks": {}}
        for k, uv in self.landmarks.items():
            d["landmarks"][k] = {"uv": [round(float(x), 3) for x in uv]}
            if k in self.confidence:
                d["landmarks"][k]["confidence"] = round(float(self.confidence[k]), 4)
        if self.centroid is not None:
            d["centroid"] = {"uv": [round(float(x), 3) for x in self.centroid]}
        return d


@dataclass
class Landmarks2D:
    """Per view (in the order of the X-rays): level → evidence."""

    views: list[dict[str, VertebraEvidence]]
    names: list[str | None] = field(default_factory=list)
    source: str = ""

    def for_level(self, level: str) -> list[VertebraEvidence]:
        return [v.get(level, VertebraEvidence()) for v in self.views]

    def to_dict(self) -> dict[str, Any]:
        views = []
        for i, v in enumerate(self.views):
            entry: dict[str, Any] = {"vertebrae": [ev.to_dict(level) for level, ev in v.items()]}
            if i < len(self.names) and self.names[i]:
                entry["name"] = self.names[i]
            views.append(entry)
        return {"schema": LANDMARKS_2D_V1, "views": views, "source": self.source}


def read_landmarks_2d(path: str | Path, n_views: int | None = None) -> Landmarks2D:
    """Read and check a landmarks file; ``n_views``: the number of X-rays it must describe."""
    doc = load_json(path, LANDMARKS_2D_V1)
    if n_views is not None and len(doc["views"]) != n_views:
        raise UserError(
            f"describes {len(doc['views'])} views but {n_views} X-rays were given",
            "give one views[] entry per X-ray, in the same order",
            path,
        )
    views: list[dict[str, VertebraEvidence]] = []
    for i, v in enumerate(doc["views"]):
        levels: dict[str, VertebraEvidence] = {}
        for vert in v["vertebrae"]:
            if vert["level"] in levels:
                raise UserError(f"view {i} lists {vert['level']} twice", "list each vertebra once per view", path)
            ev = VertebraEvidence()
            for name, pt in vert.get("landmarks", {}).items():
                ev.landmarks[name] = np.asarray(pt["uv"], float)
                if not np.isfinite(ev.landmarks[name]).all():
                    raise UserError(f"view {i} {vert['level']} {name}: uv is not finite", "give pixel coordinates",
                                    path)  # fmt: skip
                if "confidence" in pt:
                    ev.confidence[name] = float(pt["confidence"])
            if "centroid" in vert:
                ev.centroid = np.asarray(vert["centroid"]["uv"], float)
                if not np.isfinite(ev.centroid).all():
                    raise UserError(f"view {i} {vert['level']} centroid is not finite", "give pixel coordinates", path)
            levels[vert["level"]] = ev
        views.append(levels)
    return Landmarks2D(views, [v.get("name") for v in doc["views"]], doc.get("source", ""))


def write_landmarks_2d(lm: Landmarks2D, path: str | Path) -> Path:
    doc = lm.to_dict()
    validate(doc, LANDMARKS_2D_V1, path)
    atomic_write_json(Path(path), doc)
    return Path(path)
