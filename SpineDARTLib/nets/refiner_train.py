"""Training of the refiner (:mod:`.refiner`): a resumable loop, weights and model card.

Loss per sample: the landmarks' distance to the truth (crop pixels, visible landmarks only,
divided by ``POINT_SCALE``), a Laplace likelihood that teaches ``log_sigma`` the size of that
distance (the distance detached: σ learns to predict the error, it does not excuse it), and the
mask's binary cross-entropy at stride 2. Validation crops use a fixed jitter per sample (seeded) and
no rotation or scale; they report the landmark error in mm at the detector (median, mean, p90), the
mask Dice and the rank correlation of σ with the error (does the confidence mean anything).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from ..errors import UserError
from .refiner import Refiner, RefinerConfig
from .refiner_data import JITTER_MM, RefinerSamples, prepare
from .training import begin_run, load_checked, run_epochs, write_card

CARD_SCHEMA = "spinedart.refiner-card/1"
POINT_SCALE = 4.0  # crop pixels: the distance term's unit
MASK_WEIGHT = 1.0
NOISE_MAX = 0.05  # of the normalised crop's range


def batch(samples: RefinerSamples, idx: np.ndarray, config: RefinerConfig, rng: np.random.Generator | None,
          seed: int = 0) -> dict[str, torch.Tensor]:  # fmt: skip
    """Crops of samples ``idx`` as tensors; ``rng`` augments (training), else each sample's crop is
    fixed by (``seed``, sample)."""
    items = []
    for i in idx:
        r = rng if rng is not None else np.random.default_rng([seed, int(i)])
        items.append(samples.crop(int(i), config, r, augment=rng is not None))
    x = np.stack([s["image"] for s in items])[:, None]
    if rng is not None:
        x = x * rng.uniform(0.8, 1.25, (len(idx), 1, 1, 1)) + rng.uniform(-0.1, 0.1, (len(idx), 1, 1, 1))
        x = x + rng.uniform(0, NOISE_MAX, (len(idx), 1, 1, 1)) * rng.normal(size=x.shape)
    out = {k: torch.from_numpy(np.stack([s[k] for s in items])) for k in ("points", "visible", "mask", "mm_per_px")}
    out["image"] = torch.from_numpy(x.astype(np.float32))
    return out


def refiner_loss(pred: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-landmark distance in crop pixels (B, L))."""
    d = torch.linalg.vector_norm(pred["points"] - b["points"], dim=-1)
    w = b["visible"].float()
    n = w.sum().clamp(min=1.0)
    point = (d * w).sum() / n / POINT_SCALE
    sigma_nll = ((d.detach() * torch.exp(-pred["log_sigma"]) + pred["log_sigma"]) * w).sum() / n
    mask = functional.binary_cross_entropy_with_logits(pred["mask"][:, 0], b["mask"])
    return point + sigma_nll + MASK_WEIGHT * mask, d


@torch.no_grad()
def evaluate(model: Refiner, samples: RefinerSamples, seed: int = 0, batch_size: int = 32) -> dict[str, float]:
    """Landmark error (mm at the detector), mask Dice and σ's rank correlation with the error on
    fixed crops of every sample."""
    from scipy.stats import spearmanr

    model.eval()
    errors, sigmas, dice = [], [], []
    for k in range(0, len(samples), batch_size):
        b = batch(samples, np.arange(k, min(k + batch_size, len(samples))), model.config, None, seed)
        pred = model(b["image"])
        _, d = refiner_loss(pred, b)
        vis = b["visible"].numpy()
        mm = b["mm_per_px"].numpy()[:, None]
        errors.append((d.numpy() * mm)[vis])
        sigmas.append((torch.exp(pred["log_sigma"]).numpy() * mm)[vis])
        p, t = torch.sigmoid(pred["mask"][:, 0]) > 0.5, b["mask"] > 0.5
        inter, total = (p & t).sum((1, 2)).float(), (p.sum((1, 2)) + t.sum((1, 2))).float()
        dice += (2 * inter / total.clamp(min=1)).tolist()
    e, s = np.concatenate(errors), np.concatenate(sigmas)
    if e.size == 0:
        return {}
    return {"landmark_mm_median": float(np.median(e)), "landmark_mm_mean": float(np.mean(e)),
            "landmark_mm_p90": float(np.percentile(e, 90)), "mask_dice": float(np.mean(dice)),
            "sigma_error_spearman": float(spearmanr(s, e).statistic) if e.size > 2 else float("nan")}  # fmt: skip


def train_refiner(
    data: Path,
    out: Path,
    config: RefinerConfig | None = None,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    resume: bool = False,
    stop_after_steps: int | None = None,
    command: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or continue) the refiner on the cases under ``data``; writes ``out`` (safetensors), its
    card and the checkpoint ``out.with_suffix('.ckpt')`` (every epoch)."""
    out, ckpt_path, say = begin_run(out, resume, seed, progress)
    config = config or RefinerConfig()
    train_files, val_files = prepare(data)
    train, val = RefinerSamples(train_files), RefinerSamples(val_files)
    if len(train) == 0:
        raise UserError("holds no training vertebra (none seen whole in a training view)", "add cases", data)
    model = Refiner(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)

    def loss_of(idx: np.ndarray, rng: np.random.Generator, _epoch: int) -> torch.Tensor:
        b = batch(train, idx, config, rng)
        return refiner_loss(model(b["image"]), b)[0]

    def validate() -> dict[str, float]:
        return {f"val_{k}": v for k, v in evaluate(model, val, seed).items()} if len(val) else {}

    state, finished = run_epochs(model, opt, loss_of, validate, n_samples=len(train), ckpt_path=ckpt_path,
                                 config=config.to_dict(), seed=seed, resume=resume, epochs=epochs,
                                 batch_size=batch_size, lr=lr, stop_after_steps=stop_after_steps, say=say,
                                 log_every=20)  # fmt: skip
    if not finished:
        return {"stopped": True, "epochs": state["epoch"], "steps": state["step"], "history": state["history"]}
    return write_card(CARD_SCHEMA, model, out, config.to_dict(), state, data, seed=seed, command=command,
                      n_train_samples=len(train), n_validation_samples=len(val), batch_size=batch_size, lr=lr,
                      jitter_mm=JITTER_MM,
                      output="landmarks (crop px) by soft-argmax, log σ (crop px), mask logits")  # fmt: skip


def load_refiner(path: Path) -> tuple[Refiner, dict[str, Any]]:
    """Weights and card (checked against each other)."""
    state, card = load_checked(path, CARD_SCHEMA, "refiner")
    model = Refiner(RefinerConfig.from_dict(card["config"]))
    model.load_state_dict(state)
    model.eval()
    return model, card
