"""The annotation network as the plan uses it: the first stage (:mod:`.detector`, whole image) and,
when installed or given, the second stage (:mod:`.refiner`, one crop per vertebra found).

Which weights ran is part of every result: ``Annotator.versions`` (their hashes) goes into a plan's
provenance and ``Annotator.key`` into each benchmark record, so a record made without the second
stage is never taken for one made with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .detect import DetectedVertebra, detect, refine

DETECTOR_WEIGHTS = ("models", "detector.safetensors")
REFINER_WEIGHTS = ("models", "refiner.safetensors")


@dataclass
class Annotator:
    detector: Any  # .detector.Detector
    refiner: Any | None  # .refiner.Refiner
    versions: dict[str, str | None]  # weights' sha256: detector, refiner (None: first stage only)
    files: dict[str, str | None]

    @property
    def key(self) -> str:
        """One string naming both stages' weights (the detector's hash alone without a refiner, as
        benchmark records made before the second stage existed have it)."""
        det, ref = self.versions["detector"], self.versions["refiner"]
        return str(det) if ref is None else f"{det}+{ref}"

    def __call__(self, image: np.ndarray, mm_per_px: float) -> list[DetectedVertebra]:
        """Vertebrae in one line-integral image (``mm_per_px`` at the detector)."""
        dets = detect(self.detector, image)
        if self.refiner is not None:
            refine(self.refiner, image, mm_per_px, dets)
        return dets

    def to(self, device: str) -> Annotator:
        self.detector.to(device)
        if self.refiner is not None:
            self.refiner.to(device)
        return self


def annotator_files(
    detector: Path | None, refiner: Path | None, fix: str = "give --detector FILE"
) -> tuple[Path, Path | None]:
    """The weights to load: given ones must exist; by default the shipped detector (required) and the
    shipped refiner where one is installed (otherwise the first stage alone, as recorded). ``fix``:
    what to tell the user when there is no detector."""
    from ..resources import resources_dir

    det = detector or resources_dir().joinpath(*DETECTOR_WEIGHTS)
    if not det.is_file():
        raise UserError("detector weights not found" if detector else "no trained detector is installed", fix, det)
    if refiner is not None:
        if not refiner.is_file():
            raise UserError("refiner weights not found", "give --refiner FILE (spinedart train-refiner)", refiner)
        return det, refiner
    shipped = resources_dir().joinpath(*REFINER_WEIGHTS)
    return det, shipped if shipped.is_file() else None


def load_annotator(
    detector: Path | None = None, refiner: Path | None = None, fix: str = "give --detector FILE"
) -> Annotator:
    """Both stages' weights, checked against their cards (see :func:`annotator_files`)."""
    from .detector_train import load_detector
    from .refiner_train import load_refiner

    det_path, ref_path = annotator_files(detector, refiner, fix)
    model, card = load_detector(det_path)
    ref_model, ref_sha = None, None
    if ref_path is not None:
        ref_model, ref_card = load_refiner(ref_path)
        ref_sha = ref_card["weights_sha256"]
    return Annotator(
        model,
        ref_model,
        {"detector": card["weights_sha256"], "refiner": ref_sha},
        {"detector": str(det_path), "refiner": None if ref_path is None else str(ref_path)},
    )
