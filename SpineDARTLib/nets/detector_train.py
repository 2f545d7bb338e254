"""Training of the annotation network: losses, a resumable loop, weights and their model card.

Seeded and checkpointed every epoch (model, optimiser, history, the epoch reached): a stopped run
is continued with ``--resume`` and gives the same weights as an uninterrupted one. The shipped
weights are ``safetensors`` with a JSON model card beside them (data and seeds, command, epochs,
time, validation curve).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from ..anatomy.landmarks import LANDMARKS
from ..errors import UserError
from .detector import Detector, DetectorConfig, instance_mask_logits
from .detector_data import DetectorDataset, check_clutter, collate, prepare
from .training import (
    begin_run,
    load_checked,
    run_epochs,
    write_card,
)

CARD_SCHEMA = "spinedart.detector-card/1"
DISPLACEMENT_SCALE = 8.0  # cells: the displacement head predicts landmark − centre divided by this
LEVEL_SCALE = 4.0  # the level head predicts the level index divided by this
LUMBAR_FROM = 12  # level index of L1
WEIGHTS = {"centre": 1.0, "landmarks": 1.0, "offsets": 1.0, "displacement": 1.0, "paths": 0.5, "region": 0.5,
           "level": 0.2, "mask": 1.0}  # fmt: skip


def focal_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss of heatmap logits against Gaussian targets."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt >= 1.0
    pos_loss = -(torch.log(p) * (1 - p) ** 2)[pos].sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - gt) ** 4)[~pos].sum()
    return (pos_loss + neg_loss) / pos.sum().clamp_min(1)


def _instances(samples: list[dict], tgts: list[dict]) -> dict[str, torch.Tensor]:
    """Every target vertebra of the batch: image index, centre cell, and its arrays (cells)."""
    rows = [(b, i) for b, s in enumerate(samples) for i in range(len(s["levels"]))]
    if not rows:
        return {}
    cat = np.concatenate
    cells = cat([t["cells"] for t in tgts])
    return {
        "b": torch.tensor([b for b, _ in rows]),
        "x": torch.from_numpy(cells[:, 0]),
        "y": torch.from_numpy(cells[:, 1]),
        "levels": torch.from_numpy(cat([s["levels"] for s in samples])).float(),
        "centres": torch.from_numpy(cat([s["centres"] for s in samples])),
        "landmarks": torch.from_numpy(cat([s["landmarks"] for s in samples])),
        "visible": torch.from_numpy(cat([s["visible"] for s in samples])),
        "masks": torch.from_numpy(cat([s["masks"] for s in samples])).float() / 255.0,
        "paths": torch.from_numpy(cat([s["paths"] for s in samples])),
        "path_visible": torch.from_numpy(cat([s["path_visible"] for s in samples])),
    }


def _displacement_loss(
    pred: torch.Tensor, points: torch.Tensor, visible: torch.Tensor, centres: torch.Tensor, stride: float
) -> torch.Tensor:
    """Smooth-L1 of predicted (K, 2P) displacements from the centres (cells) against points (K, P, 2)
    in network pixels, over the visible ones."""
    disp = (points / stride - centres[:, None, :]) / DISPLACEMENT_SCALE
    vis = visible[..., None].float()
    loss = functional.smooth_l1_loss(pred.view(len(pred), -1, 2), disp, reduction="none", beta=0.1) * vis
    return loss.sum() / (2 * vis.sum()).clamp_min(1)


def detector_loss(
    out: dict[str, torch.Tensor], samples: list[dict], tgts: list[dict], config: DetectorConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    stack = lambda k: torch.from_numpy(np.stack([t[k] for t in tgts]))  # noqa: E731
    parts: dict[str, torch.Tensor] = {
        "centre": focal_loss(out["centre"], stack("centre_hm")),
        "landmarks": focal_loss(out["landmarks"], stack("landmark_hm")),
    }
    w = stack("landmark_offset_weight").repeat_interleave(2, dim=1)
    off = (out["landmark_offset"] - stack("landmark_offset")).abs() * w
    inst = _instances(samples, tgts)
    zero = out["centre"].sum() * 0.0
    if inst:
        s = float(config.stride)
        b, x, y = inst["b"], inst["x"], inst["y"]
        at = {k: v[b, :, y, x] for k, v in out.items() if k != "mask_features"}  # (K, C) at the centres
        c = inst["centres"] / s
        off_c = (at["centre_offset"] - (c - torch.stack([x, y], 1).float())).abs().sum()
        parts["offsets"] = (off.sum() + off_c) / (w.sum() + 2 * len(b)).clamp_min(1)
        parts["displacement"] = _displacement_loss(at["displacement"], inst["landmarks"], inst["visible"], c, s)
        parts["paths"] = _displacement_loss(at["paths"], inst["paths"], inst["path_visible"], c, s)
        lumbar = (inst["levels"] >= LUMBAR_FROM).float()
        parts["region"] = functional.binary_cross_entropy_with_logits(at["region"][:, 0], lumbar)
        parts["level"] = functional.smooth_l1_loss(at["level"][:, 0], inst["levels"] / LEVEL_SCALE)
        feats, filters = out["mask_features"], at["mask_filter"]
        logits = torch.cat([instance_mask_logits(feats[b[k]], filters[k : k + 1], c[k : k + 1]) for k in range(len(b))])
        gt = inst["masks"]
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * gt).sum((1, 2)) + 1) / (prob.sum((1, 2)) + gt.sum((1, 2)) + 1)
        parts["mask"] = functional.binary_cross_entropy_with_logits(logits, gt) + dice.mean()
    else:
        for k in ("offsets", "displacement", "paths", "region", "level", "mask"):
            parts[k] = zero + (off.sum() if k == "offsets" else 0.0)
    total = sum(WEIGHTS[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def validation_metrics(model: Detector, loader, config: DetectorConfig) -> dict[str, float]:
    """Mean loss and, at the true centres, the landmark error (mm at the detector) of the
    displacement head refined by the nearest heatmap peak — a cheap proxy of the decoded error."""
    model.eval()
    losses, errors, path_errors = [], [], []
    s = float(config.stride)
    for images, samples, tgts in loader:
        out = model(images)
        loss, _ = detector_loss(out, samples, tgts, config)
        losses.append(float(loss))
        inst = _instances(samples, tgts)
        if not inst:
            continue
        b, x, y = inst["b"], inst["x"], inst["y"]
        c = torch.stack([x, y], 1).float() + out["centre_offset"][b, :, y, x]
        pred = (c[:, None, :] + out["displacement"][b, :, y, x].view(-1, len(LANDMARKS), 2) * DISPLACEMENT_SCALE) * s
        err = (pred - inst["landmarks"]).norm(dim=-1)
        mm = torch.tensor([float(samples[int(i)]["mm_per_px"]) for i in b])[:, None]
        errors.append((err * mm)[inst["visible"]].numpy())
        pp = (c[:, None, :] + out["paths"][b, :, y, x].view(len(b), -1, 2) * DISPLACEMENT_SCALE) * s
        path_errors.append(((pp - inst["paths"]).norm(dim=-1) * mm)[inst["path_visible"]].numpy())
    model.train()
    e = np.concatenate(errors) if errors else np.zeros(0)
    pe = np.concatenate(path_errors) if path_errors else np.zeros(0)
    return {
        "val_loss": float(np.mean(losses)) if losses else float("nan"),
        "val_landmark_mm_median": float(np.median(e)) if e.size else float("nan"),
        "val_landmark_mm_mean": float(np.mean(e)) if e.size else float("nan"),
        "val_path_mm_median": float(np.median(pe)) if pe.size else float("nan"),
    }


def train_detector(
    data: Path,
    out: Path,
    config: DetectorConfig | None = None,
    epochs: int = 20,
    batch_size: int = 8,
    lr: float = 5e-4,
    seed: int = 0,
    resume: bool = False,
    stop_after_steps: int | None = None,
    command: str = "",
    progress: Callable[[str], None] | None = None,
    clutter: float = 0.0,
) -> dict[str, Any]:
    """Train (or continue) the network on the cases under ``data``; writes ``out`` (safetensors),
    its card ``out.with_suffix('.json')`` and the checkpoint ``out.with_suffix('.ckpt')`` (every
    epoch). ``stop_after_steps`` stops the run as an interruption would (no weights written).
    ``clutter``: the fraction of training images given overlap clutter (:mod:`.clutter`)."""
    check_clutter(clutter)  # before anything is written
    out, ckpt_path, say = begin_run(out, resume, seed, progress)
    config = config or DetectorConfig()
    train_files, val_files = prepare(data, config)
    if not train_files:
        raise UserError("holds no training view (every case fell in the validation split)", "add cases", data)
    model = Detector(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    train_set = DetectorDataset(train_files, config, augment=True, seed=seed, clutter=clutter)
    val_loader = torch.utils.data.DataLoader(
        DetectorDataset(val_files, config), batch_size=batch_size, shuffle=False, collate_fn=collate
    )

    def loss_of(idx: np.ndarray, _rng: np.random.Generator, epoch: int) -> torch.Tensor:
        train_set.epoch = epoch  # the dataset draws its augmentation from (seed, epoch, sample)
        images, samples, tgts = collate([train_set[int(i)] for i in idx])
        return detector_loss(model(images), samples, tgts, config)[0]

    def validate() -> dict[str, float]:
        return validation_metrics(model, val_loader, config) if val_files else {}

    # The augmentation belongs to the run: a resume with another clutter fraction is refused (without
    # clutter the configuration reads as before the option, so older checkpoints still resume).
    run_config = {**config.to_dict(), **({"clutter": clutter} if clutter else {})}
    state, finished = run_epochs(model, opt, loss_of, validate, n_samples=len(train_set), ckpt_path=ckpt_path,
                                 config=run_config, seed=seed, resume=resume, epochs=epochs,
                                 batch_size=batch_size, lr=lr, stop_after_steps=stop_after_steps, say=say)  # fmt: skip
    if not finished:
        return {"stopped": True, "epochs": state["epoch"], "steps": state["step"], "history": state["history"]}
    card = write_card(CARD_SCHEMA, model, out, config.to_dict(), state, data, seed=seed, command=command,
                      n_train_views=len(train_files), n_validation_views=len(val_files), batch_size=batch_size,
                      lr=lr, clutter=clutter)  # fmt: skip
    return card


def load_detector(path: Path) -> tuple[Detector, dict[str, Any]]:
    """Weights and card (checked against each other)."""
    state, card = load_checked(path, CARD_SCHEMA, "detector")
    model = Detector(DetectorConfig.from_dict(card["config"]))
    model.load_state_dict(state)
    model.eval()
    return model, card
