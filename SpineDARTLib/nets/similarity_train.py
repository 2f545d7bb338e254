"""Training of the learned similarity: L1 on log MASD, a resumable loop, weights and model card.

Augmentations are exact (they keep the label): each view may be mirrored left-right and up-down
(a mirrored detector sees the instance and the true vertebra mirrored alike, so their distance is
unchanged) and the two views may be swapped; the X-ray window gets Gaussian noise, and the case's
degraded image replaces the clean one in half of the draws. Validation (every tenth case, clean
and degraded windows as two samples) reports the rank correlation (Spearman) of predicted and true
MASD — what a loss needs — and the median relative error.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_json
from ..errors import UserError
from ..fit.similarity_net import CARD_SCHEMA, SimilarityConfig, SimilarityNet, standardise
from .similarity_data import load_cases, prepare
from .training import (
    check_fresh,
    cosine_lr,
    data_summary,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)

NOISE_MAX = 0.3  # standard deviations of the standardised X-ray window


def batch_tensors(
    arrays: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X-ray windows, renderings, log MASD) of samples ``idx``, standardised; augmented with ``rng``."""
    xray = arrays["xray"][idx]
    if rng is not None and "xray_alt" in arrays:  # the degraded image of the case, half of the time
        xray = np.where(rng.uniform(size=len(idx))[:, None, None, None] < 0.5, arrays["xray_alt"][idx], xray)
    x = torch.from_numpy(xray.astype(np.float32))
    r = torch.from_numpy(arrays["render"][idx].astype(np.float32))
    y = torch.from_numpy(np.log(arrays["masd"][idx].astype(np.float32)))
    if rng is not None:
        for b in range(len(idx)):
            for v in range(2):
                for dim in (-1, -2):
                    if rng.uniform() < 0.5:
                        x[b, v], r[b, v] = x[b, v].flip(dim), r[b, v].flip(dim)
            if rng.uniform() < 0.5:
                x[b], r[b] = x[b].flip(0), r[b].flip(0)
    x, r = standardise(x), standardise(r)
    if rng is not None:
        sd = torch.from_numpy(rng.uniform(0, NOISE_MAX, (len(idx), 1, 1, 1)).astype(np.float32))
        x = x + sd * torch.from_numpy(rng.normal(size=x.shape).astype(np.float32))
    return x, r, y


@torch.no_grad()
def predict(model: SimilarityNet, arrays: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Predicted MASD (mm) of every sample."""
    model.eval()
    out = []
    for k in range(0, len(arrays["masd"]), batch_size):
        x, r, _ = batch_tensors(arrays, np.arange(k, min(k + batch_size, len(arrays["masd"]))))
        out.append(model.masd(x, r).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def rank_metrics(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    from scipy.stats import spearmanr

    if len(true) < 3:
        return {}
    rel = np.abs(pred - true) / true
    return {"spearman": float(spearmanr(pred, true).statistic), "median_rel_error": float(np.median(rel)),
            "mae_mm": float(np.mean(np.abs(pred - true)))}  # fmt: skip


def train_similarity(
    data: Path,
    out: Path,
    config: SimilarityConfig | None = None,
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 3e-4,
    seed: int = 0,
    per_vertebra: int = 8,
    workers: int = 1,
    resume: bool = False,
    stop_after_steps: int | None = None,
    command: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or continue) the similarity on the cases under ``data``; writes ``out`` (safetensors),
    its card ``out.with_suffix('.json')`` and the checkpoint ``out.with_suffix('.ckpt')`` (every
    epoch). ``stop_after_steps`` stops the run as an interruption would (no weights written)."""
    out = Path(out)
    config = config or SimilarityConfig()
    ckpt_path = out.with_suffix(".ckpt")
    check_fresh(ckpt_path, resume)
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    torch.manual_seed(seed)
    train_files, val_files, problems = prepare(data, config, per_vertebra, seed, workers)
    train, val = load_cases(train_files, "alternative"), load_cases(val_files)
    if not train:
        raise UserError("holds no training sample (no vertebra seen whole in both views)", "add cases", data)
    model = SimilarityNet(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "seconds": 0.0}
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, config.to_dict(), seed)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        torch.set_rng_state(ck["torch_rng"])  # stochastic depth continues its stream
        say(f"resuming after epoch {state['epoch']} ({state['step']} steps)")
    n = len(train["masd"])
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    warmup = min(200, max(1, total // 10))
    stopped = False
    while state["epoch"] < epochs and not stopped:
        t0 = time.perf_counter()
        epoch = state["epoch"]
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        model.train()
        running = []
        for k in range(steps_per_epoch):
            if stop_after_steps is not None and state["step"] >= stop_after_steps:
                stopped = True  # as if interrupted: this epoch's steps are lost, --resume redoes it
                break
            x, r, y = batch_tensors(train, order[k * batch_size : (k + 1) * batch_size], rng)
            for group in opt.param_groups:
                group["lr"] = cosine_lr(state["step"], total, lr, warmup)
            loss = (model(x, r) - y).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state["step"] += 1
            running.append(float(loss.detach()))
            if k % 20 == 0 or k == steps_per_epoch - 1:
                say(f"epoch {epoch + 1}/{epochs} [{k + 1}/{steps_per_epoch}] L1(log MASD) {np.mean(running[-20:]):.3f}")
        if stopped:
            break
        metrics = {f"val_{k}": v for k, v in rank_metrics(predict(model, val), val["masd"]).items()} if val else {}
        state["epoch"] += 1
        state["seconds"] += time.perf_counter() - t0
        state["history"].append({"epoch": state["epoch"], "train_l1_log": float(np.mean(running)), **metrics})
        say(f"epoch {state['epoch']}: " + ", ".join(f"{k} {v:.3f}" for k, v in state["history"][-1].items()))
        ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                "config": config.to_dict(), "seed": seed, "torch_rng": torch.get_rng_state()}  # fmt: skip
        save_checkpoint(ckpt_path, ckpt)
    if state["epoch"] < epochs:
        say(f"stopped after epoch {state['epoch']} of {epochs}: continue with --resume")
        return {"stopped": True, "epochs": state["epoch"], "steps": state["step"], "history": state["history"]}
    digest = save_weights(model, out)
    card = {
        "schema": CARD_SCHEMA,
        "weights": out.name,
        "weights_sha256": digest,
        "config": config.to_dict(),
        "seed": seed,
        "command": command,
        "data": data_summary(data),
        "samples_per_vertebra": per_vertebra,
        "n_train_samples": n,
        "n_validation_samples": len(val["masd"]) if val else 0,
        "left_out_cases": problems,
        "epochs": state["epoch"],
        "steps": state["step"],
        "batch_size": batch_size,
        "lr": lr,
        "train_seconds": round(state["seconds"], 1),
        "history": state["history"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "output": "log MASD (mm) of the instance to the true vertebra; MASD = exp(output)",
    }
    atomic_write_json(out.with_suffix(".json"), card)
    return card
