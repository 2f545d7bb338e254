"""Shape models on disk: ``MODEL.npz`` (arrays) + ``MODEL.json`` (the card, ``spinedart.ssm-card/1``:
levels, members and their seed range, input hashes, variance explained, build command, software
version, and the npz's own hash, checked on load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json, atomic_write_npz
from ..errors import UserError
from ..provenance import provenance, sha256_file
from ..schemas import SSM_CARD_V1, load_json, validate
from .model import ShapeModel

_ARRAYS = ("mean", "modes", "std", "faces", "part_labels", "interior_density")


def card_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name[: -len(".npz")] + ".json" if p.name.endswith(".npz") else p.name + ".json")


def save_model(model: ShapeModel, path: str | Path) -> Path:
    """Write the arrays (zip members with fixed timestamps: same model, same bytes) and the card."""
    path = Path(path)
    if not path.name.endswith(".npz"):
        raise UserError("a shape model file must end in .npz", "name it e.g. lumbar.npz", path)
    arrays = {name: np.asarray(getattr(model, name)) for name in _ARRAYS}
    arrays["level_mean_coeffs"] = np.array([model.level_mean_coeffs[lv] for lv in model.levels])
    atomic_write_npz(path, arrays)
    card: dict[str, Any] = {
        "schema": SSM_CARD_V1,
        **{k: v for k, v in model.card.items() if k not in ("schema", "arrays_sha256", "provenance")},
        "levels": list(model.levels),
        "n_surface": model.n_surface,
        "n_vertices": model.n_surface,
        "n_modes": model.n_modes,
        "annotations": list(model.annotation_names),
        "n_interior": len(model.interior_density),
        "arrays_sha256": sha256_file(path),
        "provenance": model.card.get("provenance") or provenance(seed=model.card.get("seed")),
    }
    validate(card, SSM_CARD_V1, card_path(path))
    atomic_write_json(card_path(path), card)
    return path


def load_model(path: str | Path) -> ShapeModel:
    path = Path(path)
    if not path.is_file():
        raise UserError("shape model file not found", "give the .npz written by build-ssm", path)
    cp = card_path(path)
    if not cp.is_file():
        raise UserError("shape model has no card next to it", f"put {cp.name} beside the .npz", path)
    card = load_json(cp, SSM_CARD_V1)
    if sha256_file(path) != card["arrays_sha256"]:
        raise UserError(
            "shape model arrays do not match their card (hash differs)", "rebuild or re-copy both files", path
        )
    try:
        with np.load(path) as z:
            arrays = {name: z[name] for name in (*_ARRAYS, "level_mean_coeffs")}
    except Exception as exc:  # a damaged zip raises several types
        raise UserError(f"cannot read the shape model ({type(exc).__name__})", "rebuild the model", path) from exc
    levels = tuple(card["levels"])
    return ShapeModel(
        mean=arrays["mean"],
        modes=arrays["modes"],
        std=arrays["std"],
        faces=arrays["faces"],
        part_labels=arrays["part_labels"],
        n_surface=int(card["n_surface"]),
        annotation_names=tuple(card["annotations"]),
        interior_density=arrays["interior_density"],
        levels=levels,
        level_mean_coeffs=dict(zip(levels, arrays["level_mean_coeffs"], strict=True)),
        card=card,
    )
