"""Network weights on disk: ``safetensors`` (never pickle) with a JSON card beside them that names
their schema and sha256; loading checks both, so a file swapped or damaged after training is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_bytes
from .errors import UserError
from .provenance import sha256_file


def save_weights(model: torch.nn.Module, path: Path) -> str:
    """``safetensors`` of the model's state in float16 (half the size; loaded back into float32) —
    contiguous CPU tensors; returns the file's sha256."""
    from safetensors.torch import save

    state = {
        k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    atomic_write_bytes(path, save(state, metadata={"format": "pt"}))
    return sha256_file(path)


def load_checked(path: Path, schema: str, what: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, card) of weights whose card (``.json`` beside them) has ``schema`` and whose
    sha256 matches the card's."""
    from safetensors.torch import load_file

    path = Path(path)
    card_file = path.with_suffix(".json")
    if not path.is_file() or not card_file.is_file():
        raise UserError(f"{what} weights or their card (.json beside them) are missing", "train or reinstall", path)
    try:
        card = json.loads(card_file.read_text())
    except ValueError:
        raise UserError(f"the {what} card is not valid JSON", "give the weights' own .json", card_file) from None
    if card.get("schema") != schema:
        raise UserError(f"not a {what} card ({card.get('schema')!r})", "give the weights' own .json", card_file)
    if sha256_file(path) != card.get("weights_sha256"):
        raise UserError("the weights do not match their card (sha256)", "reinstall or retrain them", path)
    return load_file(path), card
