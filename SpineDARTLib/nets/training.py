"""What every trainer of the project shares: the learning-rate schedule, the checkpoint beside the
weights, the summary of the training data (and, from :mod:`..weights`, the weights with their card).

A checkpoint is written atomically after every epoch; a run resumed from it continues the same
random streams, so a stopped and resumed run gives the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import UserError
from ..weights import load_checked, save_weights

__all__ = ["begin_run", "check_fresh", "cosine_lr", "data_summary", "load_checked", "load_checkpoint",
           "save_checkpoint", "save_weights", "run_epochs", "write_card"]  # fmt: skip


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


def begin_run(
    out: Path, resume: bool, seed: int, progress: Callable[[str], None] | None
) -> tuple[Path, Path, Callable[[str], None]]:
    """What every trainer does first: (weights path, its checkpoint beside it — refused when there
    and the run is not resumed —, the progress printer: standard error by default); torch seeded."""
    out = Path(out)
    ckpt_path = out.with_suffix(".ckpt")
    check_fresh(ckpt_path, resume)
    torch.manual_seed(seed)
    return out, ckpt_path, progress or (lambda text: print(text, file=sys.stderr, flush=True))


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


def run_epochs(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    loss_of: Callable[[np.ndarray, np.random.Generator, int], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    *,
    n_samples: int,
    ckpt_path: Path,
    config: dict[str, Any],
    seed: int,
    resume: bool,
    epochs: int,
    batch_size: int,
    lr: float,
    stop_after_steps: int | None,
    say: Callable[[str], None],
    label: str = "loss",
    log_every: int = 10,
    order_of: Callable[[np.random.Generator], np.ndarray] | None = None,
) -> tuple[dict[str, Any], bool]:
    """The epoch loop every trainer runs: resume from the checkpoint, shuffle per epoch (seeded by
    (seed, epoch); the generator is handed on to ``loss_of(indices, rng, epoch)`` for augmentation),
    cosine schedule with warm-up, clipped AdamW steps, ``validate()`` and a checkpoint after every
    epoch. ``order_of(rng)``: the epoch's sample order instead of a permutation (``n_samples`` long;
    batches are its consecutive slices). Returns (state, finished); a run stopped by
    ``stop_after_steps`` (as an interruption would, losing the epoch's steps) is not finished."""
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "seconds": 0.0}
    if resume and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, config, seed)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        # Stochastic depth draws from torch's generator: continue its stream where the run stopped.
        torch.set_rng_state(ck["torch_rng"])
        say(f"resuming after epoch {state['epoch']} ({state['step']} steps)")
    steps_per_epoch = math.ceil(n_samples / batch_size)
    total = epochs * steps_per_epoch  # the schedule's length, whatever stops the run early
    warmup = min(200, max(1, total // 10))
    while state["epoch"] < epochs:
        t0 = time.perf_counter()
        epoch = state["epoch"]
        rng = np.random.default_rng([seed, epoch])
        order = order_of(rng) if order_of is not None else rng.permutation(n_samples)
        model.train()
        running = []
        for k in range(steps_per_epoch):
            if stop_after_steps is not None and state["step"] >= stop_after_steps:
                say(f"stopped after epoch {state['epoch']} of {epochs}: continue with --resume")
                return state, False
            for group in opt.param_groups:
                group["lr"] = cosine_lr(state["step"], total, lr, warmup)
            loss = loss_of(order[k * batch_size : (k + 1) * batch_size], rng, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state["step"] += 1
            running.append(float(loss.detach()))
            if k % log_every == 0 or k == steps_per_epoch - 1:
                recent = np.mean(running[-log_every:])
                say(f"epoch {epoch + 1}/{epochs} [{k + 1}/{steps_per_epoch}] {label} {recent:.3f}")
        metrics = validate()
        state["epoch"] += 1
        state["seconds"] += time.perf_counter() - t0
        state["history"].append({"epoch": state["epoch"], f"train_{label}": float(np.mean(running)), **metrics})
        say(f"epoch {state['epoch']}: " + ", ".join(f"{k} {v:.3f}" for k, v in state["history"][-1].items()))
        ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state, "config": config,
                "seed": seed, "torch_rng": torch.get_rng_state()}  # fmt: skip
        save_checkpoint(ckpt_path, ckpt)
    return state, True


def write_card(
    schema: str,
    model: torch.nn.Module,
    out: Path,
    config: dict[str, Any],
    state: dict[str, Any],
    data: Path,
    **fields: Any,
) -> dict[str, Any]:
    """Save the weights and their model card (what every card holds, then the trainer's ``fields``:
    seed, command, batch size, learning rate, sample counts ...); returns the card."""
    from ..atomic import atomic_write_json

    digest = save_weights(model, out)
    card = {"schema": schema, "weights": out.name, "weights_sha256": digest, "config": config,
            "data": data_summary(data), **fields, "epochs": state["epoch"], "steps": state["step"],
            "train_seconds": round(state["seconds"], 1), "history": state["history"],
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    atomic_write_json(out.with_suffix(".json"), card)
    return card
