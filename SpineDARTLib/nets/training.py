"""What every trainer of the project shares: the learning-rate schedule, the checkpoint beside the
weights, the summary of the training data (and, from :mod:`..weights`, the weights with their card).

A checkpoint is written atomically after every epoch; a run resumed from it continues the same
random streams, so a stopped and resumed run gives the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from ..errors import UserError
from ..weights import load_checked, save_weights

__all__ = ["check_fresh", "cosine_lr", "data_summary", "load_checked", "load_checkpoint", "save_checkpoint",
           "save_weights"]  # fmt: skip


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then a cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Path, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """A checkpoint of a run with this ``config`` and ``seed`` (else a one-line error)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("config") != config or ck.get("seed") != seed:
        raise UserError("the checkpoint has another configuration or seed", "resume with its options", path)
    return ck


def check_fresh(ckpt_path: Path, resume: bool) -> None:
    if ckpt_path.exists() and not resume:
        raise UserError("an earlier run's checkpoint is there", "add --resume to continue it, or delete it", ckpt_path)


def data_summary(data: Path) -> dict[str, Any]:
    """What a network was trained on: the data-engine runs (their seeds and options, from each
    manifest.json) and the cases' kinds and seed range, for the no-peeking check."""
    from .detector_data import case_dirs

    runs = []
    for m in sorted(Path(data).rglob("manifest.json")):
        doc = json.loads(m.read_text())
        runs.append({k: doc.get(k) for k in ("seed", "n", "levels", "views", "fractured", "detector_px", "options")})
    seeds, kinds = [], {}
    for d in case_dirs(data):
        case = json.loads((d / "case.json").read_text())
        if case.get("seed") is not None:
            seeds.append(int(case["seed"]))
        kinds[case.get("kind", "?")] = kinds.get(case.get("kind", "?"), 0) + 1
    return {"folder": str(data), "runs": runs, "n_cases": sum(kinds.values()), "kinds": kinds,
            "case_seed_min": min(seeds, default=None), "case_seed_max": max(seeds, default=None)}  # fmt: skip
