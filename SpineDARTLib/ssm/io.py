"""Shape models on disk: ``MODEL.npz`` (arrays) + ``MODEL.json`` (the card, ``spinedart.ssm-card/1``:
levels, members and their seed range, input hashes, variance explained, build command, software
version, and the npz's own hash, checked on load)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json, atomic_write_npz
from ..errors import UserError
from ..provenance import provenance, sha256_file
from ..schemas import SSM_CARD_V1, load_json, validate
from .model import ShapeModel, interior_modes

_ARRAYS = ("mean", "modes", "std", "faces", "part_labels", "interior_points", "interior_density")
# The interior points' modes are not stored: they are derived from the surface modes on load, by the
# same function the builder uses (so a loaded model equals the built one). That keeps a model file
# at ~1.5 MB instead of ~8 MB.
_INTERIOR_MODES = "derived on load: inverse-distance weights of the 8 nearest mean-surface vertices"


def card_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name[: -len(".npz")] + ".json" if p.name.endswith(".npz") else p.name + ".json")


def save_model(model: ShapeModel, path: str | Path) -> Path:
    """Write the arrays (zip members with fixed timestamps: same model, same bytes) and the card."""
    path = Path(path)
    if not path.name.endswith(".npz"):
        raise UserError("a shape model file must end in .npz", "name it e.g. lumbar.npz", path)
    sa = slice(0, model.n_surface + model.n_annotations)
    arrays = {
        "mean": model.mean[sa],
        "modes": model.modes[:, sa],
        "std": model.std,
        "faces": model.faces,
        "part_labels": model.part_labels,
        "interior_points": model.mean[model.interior_slice],
        "interior_density": model.interior_density,
    }
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
        "interior_modes": _INTERIOR_MODES,
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
    n_surface = int(card["n_surface"])
    try:
        inner = interior_modes(arrays["mean"][:n_surface], arrays["modes"][:, :n_surface], arrays["interior_points"])
    except (ValueError, IndexError) as exc:
        raise UserError("shape model arrays are inconsistent", "rebuild the model", path) from exc
    return ShapeModel(
        mean=np.vstack([arrays["mean"], arrays["interior_points"]]),
        modes=np.concatenate([arrays["modes"], inner], axis=1),
        std=arrays["std"],
        faces=arrays["faces"],
        part_labels=arrays["part_labels"],
        n_surface=n_surface,
        annotation_names=tuple(card["annotations"]),
        interior_density=arrays["interior_density"],
        levels=levels,
        level_mean_coeffs=dict(zip(levels, arrays["level_mean_coeffs"], strict=True)),
        card=card,
    )


def bundled_model_path(level_or_region: str) -> Path:
    """The shipped model of a level (``L3``) or region (``L1-L5``): ``Resources/ssm/REGION.npz``."""
    from ..anatomy.levels import REGIONS, region_of
    from ..resources import resource_path

    key = str(level_or_region).strip().upper()
    region = key if key in REGIONS else region_of(key)
    return resource_path("ssm", f"{region}.npz")


def load_bundled(level_or_region: str) -> ShapeModel:
    """The shipped regional model covering a level (or named by its region)."""
    return load_model(bundled_model_path(level_or_region))


@functools.lru_cache(maxsize=4)
def _bundled_region(region: str) -> ShapeModel:
    return load_bundled(region)


def model_for_level(level: str) -> ShapeModel:
    """The shipped model of a level's region, loaded once per process (read-only: do not modify)."""
    from ..anatomy.levels import region_of

    return _bundled_region(region_of(level))
