"""Training of the learned similarity: L1 on log MASD (plus, optionally, a ranking term within each
vertebra), a resumable loop, weights and model card.

A fit descends the prediction from one vertebra's current instance: what it needs is the *order*
of nearby instances of the same vertebra in the same views, which an L1 regression over all
vertebrae rewards only indirectly (a constant offset per vertebra costs it as much as a wrong
order). With ``rank_weight`` > 0 each batch is made of a few such groups (``GROUP_DRAW`` instances
of each, drawn from the vertebra's samples) and a logistic ranking loss on every pair of a group
whose true MASD differ by more than ``RANK_MIN_GAP`` (in log) is added.

Augmentations are exact (they keep the label): each view may be mirrored left-right and up-down
(a mirrored detector sees the instance and the true vertebra mirrored alike, so their distance is
unchanged) and the two views may be swapped; the X-ray window gets Gaussian noise, and the case's
degraded image replaces the clean one in half of the draws. With ``window_jitter`` J, each view's
window is moved by up to J crop pixels, the X-ray and the rendering alike (the label is unchanged:
only where the window is cut moves): see :func:`jitter`. Validation (every tenth case, clean
and degraded windows as two samples) reports the rank correlation (Spearman) of predicted and true
MASD — what a loss needs — and the median relative error.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..fit.similarity_net import CARD_SCHEMA, SimilarityConfig, SimilarityNet, load_similarity, standardise
from ..provenance import sha256_file
from .similarity_data import load_cases, prepare
from .training import (
    begin_run,
    run_epochs,
    write_card,
)

NOISE_MAX = 0.3  # standard deviations of the standardised X-ray window
GROUP_DRAW = 4  # instances of one vertebra and pair per batch with the ranking term
RANK_MIN_GAP = float(np.log(1.1))  # pairs within 10 % of each other's MASD are not ranked
RANK_TAU = 0.1  # temperature of the logistic ranking loss (log MASD units)


def jitter(x: torch.Tensor, r: torch.Tensor, rng: np.random.Generator, most: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each view's window of each sample moved by a random whole number of crop pixels (up to
    ``most`` each way), the X-ray and the rendering alike: the X-ray's edge repeated where the
    window leaves the cut, the rendering zero there (the instance is drawn alone).

    Why: the samples are cut with the instance at the window's centre, so a network can read a
    translation error from where the X-ray's vertebra sits in the window alone, without comparing
    it with the rendering; at fit time the window follows the instance, and the gradient of such a
    network through the rendering says little (measured: it pointed away from the truth along one
    axis on the demo case). With the window moved, only the X-ray-to-rendering offset tells."""
    if most <= 0:
        return x, r
    n = x.shape[-1]
    xp = torch.nn.functional.pad(x, (most,) * 4, mode="replicate")
    rp = torch.nn.functional.pad(r, (most,) * 4)
    shifts = rng.integers(-most, most + 1, size=(x.shape[0], x.shape[1], 2))
    xo, ro = torch.empty_like(x), torch.empty_like(r)
    for b in range(x.shape[0]):
        for v in range(x.shape[1]):
            du, dv = (int(k) + most for k in shifts[b, v])
            xo[b, v] = xp[b, v, dv : dv + n, du : du + n]
            ro[b, v] = rp[b, v, dv : dv + n, du : du + n]
    return xo, ro


def batch_tensors(
    arrays: dict[str, np.ndarray], idx: np.ndarray, rng: np.random.Generator | None = None, window_jitter: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X-ray windows, renderings, log MASD) of samples ``idx``, standardised; augmented with ``rng``
    (windows moved by up to ``window_jitter`` crop pixels, see :func:`jitter`)."""
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
        x, r = jitter(x, r, rng, window_jitter)
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


def rank_metrics(pred: np.ndarray, true: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """Spearman ρ over all samples, median relative error, mean absolute error; with ``groups`` also
    ``spearman_within``: the mean ρ within each vertebra-and-pair group of ≥ 3 samples (the order a
    fit descends)."""
    from scipy.stats import spearmanr

    if len(true) < 3:
        return {}
    rel = np.abs(pred - true) / true
    out = {"spearman": float(spearmanr(pred, true).statistic), "median_rel_error": float(np.median(rel)),
           "mae_mm": float(np.mean(np.abs(pred - true)))}  # fmt: skip
    if groups is not None:
        within = [spearmanr(pred[groups == g], true[groups == g]).statistic for g in np.unique(groups)
                  if np.sum(groups == g) >= 3]  # fmt: skip
        within = [r for r in within if np.isfinite(r)]
        if within:
            out["spearman_within"] = float(np.mean(within))
    return out


def grouped_order(groups: np.ndarray, rng: np.random.Generator, draw: int = GROUP_DRAW) -> np.ndarray:
    """An epoch's sample order in chunks of ``draw`` samples of one group (each group's samples
    shuffled and cut into chunks, the chunks shuffled); a group's remainder is left out of the epoch.
    Its length depends on the group sizes only, not on ``rng``."""
    chunks = []
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        chunks += [members[k : k + draw] for k in range(0, len(members) - draw + 1, draw)]
    if not chunks:
        return np.zeros(0, np.int64)
    return np.concatenate([chunks[i] for i in rng.permutation(len(chunks))])


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss over the pairs of one group whose targets (log MASD) differ by more than
    ``RANK_MIN_GAP``: the farther instance should be predicted farther. Zero (with a graph) when the
    batch holds no such pair."""
    farther = (groups[:, None] == groups[None, :]) & (target[:, None] - target[None, :] > RANK_MIN_GAP)
    if not bool(farther.any()):
        return pred.sum() * 0.0
    margin = (pred[:, None] - pred[None, :])[farther]
    return RANK_TAU * torch.nn.functional.softplus(-margin / RANK_TAU).mean()


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
    trajectories: int = 0,
    init_weights: Path | None = None,
    rank_weight: float = 0.0,
    window_jitter: int = 0,
    ray_samples: int = 0,
) -> dict[str, Any]:
    """Train (or continue) the similarity on the cases under ``data``; writes ``out`` (safetensors),
    its card ``out.with_suffix('.json')`` and the checkpoint ``out.with_suffix('.ckpt')`` (every
    epoch). ``stop_after_steps`` stops the run as an interruption would (no weights written).
    ``trajectories``: traced fits per view pair whose iterates are samples too (see
    :mod:`.similarity_data`). ``init_weights``: start from these weights (fine-tuning; their
    configuration is used and their hash recorded). ``rank_weight``: weight of the ranking term
    (0: L1 alone, batches drawn over all samples). ``window_jitter``: see :func:`jitter`.
    ``ray_samples``: instances moved along one view's ray per vertebra and pair, samples too (see
    :mod:`.similarity_data`)."""
    out, ckpt_path, say = begin_run(out, resume, seed, progress)
    config = config or SimilarityConfig()
    start = None
    if init_weights is not None:
        start, start_card = load_similarity(init_weights)
        config = SimilarityConfig.from_dict(start_card["config"])
    half = config.crop_px // 2
    if window_jitter >= half:  # the instance could leave the window entirely: renderings of nothing
        what = f"--window-jitter {window_jitter} moves the window by half its width ({half} of {config.crop_px} px)"
        raise UserError(what + " or more", f"give less than {half}, e.g. {config.crop_px // 16}")
    train_files, val_files, problems = prepare(data, config, per_vertebra, seed, workers, trajectories, ray_samples)
    train, val = load_cases(train_files, "alternative"), load_cases(val_files)
    if not train:
        raise UserError("holds no training sample (no vertebra seen whole in both views)", "add cases", data)
    model = SimilarityNet(config)
    if start is not None:
        model.load_state_dict(start.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)

    def loss_of(idx: np.ndarray, rng: np.random.Generator, _epoch: int) -> torch.Tensor:
        x, r, y = batch_tensors(train, idx, rng, window_jitter)
        pred = model(x, r)
        loss = (pred - y).abs().mean()
        if rank_weight > 0:
            loss = loss + rank_weight * ranking_loss(pred, y, torch.from_numpy(train["group"][idx]))
        return loss

    def validate() -> dict[str, float]:
        if not val:
            return {}
        return {f"val_{k}": v for k, v in rank_metrics(predict(model, val), val["masd"], val["group"]).items()}

    n = len(train["masd"])
    order_of = None
    if rank_weight > 0:
        n = len(grouped_order(train["group"], np.random.default_rng(0)))

        def order_of(rng: np.random.Generator) -> np.ndarray:
            return grouped_order(train["group"], rng)

    # A checkpoint resumes only the run it was written by: the ranking term changes the batches too.
    ckpt_config = (config.to_dict() | ({"rank_weight": rank_weight} if rank_weight > 0 else {})
                   | ({"window_jitter": window_jitter} if window_jitter > 0 else {})
                   | ({"ray_samples": ray_samples} if ray_samples > 0 else {}))  # fmt: skip
    state, finished = run_epochs(model, opt, loss_of, validate, n_samples=n, ckpt_path=ckpt_path,
                                 config=ckpt_config, seed=seed, resume=resume, epochs=epochs,
                                 batch_size=batch_size, lr=lr, stop_after_steps=stop_after_steps, say=say,
                                 label="loss" if rank_weight > 0 else "l1_log", log_every=20,
                                 order_of=order_of)  # fmt: skip
    if not finished:
        return {"stopped": True, "epochs": state["epoch"], "steps": state["step"], "history": state["history"]}
    card = write_card(CARD_SCHEMA, model, out, config.to_dict(), state, data, seed=seed, command=command,
                      samples_per_vertebra=per_vertebra, traced_fits_per_pair=trajectories, n_train_samples=n,
                      ray_samples_per_pair=ray_samples, rank_weight=rank_weight, window_jitter=window_jitter,
                      rank={"draw": GROUP_DRAW, "min_gap_log": RANK_MIN_GAP, "tau": RANK_TAU},
                      init_weights=None if init_weights is None else {"path": str(init_weights),
                                                                      "sha256": sha256_file(init_weights)},
                      n_validation_samples=len(val["masd"]) if val else 0, left_out_cases=problems,
                      batch_size=batch_size, lr=lr,
                      output="log MASD (mm) of the instance to the true vertebra; MASD = exp(output)")  # fmt: skip
    return card
