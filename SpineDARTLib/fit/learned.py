"""The learned similarity as a term of the fit: the network's predicted MASD (mm) of each instance.

Each instance is rendered alone, with every render point of its model (as in training, whatever
the stage's level of detail), into each view's window around its current centre; the X-ray
windows are cut from the full-resolution images. The windows follow the instance and are
differentiated with it (:func:`.similarity_net.crop_torch`): the gradient flows through the
renderings *and* through where the X-ray is cut, so it is the derivative of the function the
network learned (the instance always at the window's centre).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..render.renderer import SplatRenderer
from .similarity_net import crop_torch, load_similarity, standardise, window_torch
from .solid import Solid

SIMILARITY_WEIGHTS = ("models", "similarity.safetensors")


def default_weights() -> Path:
    from ..resources import resources_dir

    return resources_dir().joinpath(*SIMILARITY_WEIGHTS)


@lru_cache(maxsize=2)
def _load(path: str):
    model, card = load_similarity(Path(path))
    for p in model.parameters():
        p.requires_grad_(False)  # a fixed loss: gradients go to the renderings only
    return model, card


def load_network(path: str | Path | None):
    """The similarity network and its card (loaded once per process)."""
    p = Path(path) if path else default_weights()
    if not p.is_file():
        raise UserError(
            "no learned similarity weights are installed" if path is None else "similarity weights are missing",
            "train them with spinedart train-similarity, or fit with --loss analytic+mask",
            p,
        )
    return _load(str(p.resolve()))


def render_in_windows(solid: Solid, p: dict[str, torch.Tensor], windows, renderer: SplatRenderer) -> torch.Tensor:
    """The instance alone (every render point of ``solid`` at pose/shape ``p``) rendered into each
    window: (V, n, n) line integrals, differentiable w.r.t. ``p``. Training samples are drawn the
    same way, so the network sees at fit time what it learned from."""
    P = torch.as_tensor(np.stack([w.projection.P for w in windows]), dtype=torch.float32, device=solid.mean.device)
    return _render(solid, p, P, windows[0].projection.image_size[0], renderer)


def _render(solid: Solid, p: dict[str, torch.Tensor], P: torch.Tensor, n: int, renderer: SplatRenderer) -> torch.Tensor:
    means, _ = solid.place(p["b"], p["r"], p["t"])
    var = torch.full((len(solid),), solid.variance, device=solid.mean.device)
    return renderer.render(means, var, solid.mass, P, (n, n)).images


class LearnedTerm:
    """Predicted MASD of instances of ``models`` in ``views`` (images + projections, full resolution)."""

    def __init__(self, models, images: list[np.ndarray], projections, weights: str | Path | None, device) -> None:
        self.net, self.card = load_network(weights)
        self.net.to(device)
        self.config = self.net.config
        self.device = device
        self.solids = [Solid(m, None, device=device) for m in models]
        self.images = [np.asarray(im, np.float32) for im in images]
        self.projections = list(projections)
        self.P = [torch.tensor(np.asarray(q.P), dtype=torch.float32, device=device) for q in self.projections]
        self.fx = [float(abs(q.K[0, 0])) for q in self.projections]
        self.renderer = SplatRenderer()

    def __call__(self, params: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Mean predicted MASD (mm) over the instances (differentiable w.r.t. their parameters)."""
        return self.predict(params).mean()

    def predict(self, params: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Predicted MASD (mm) of each instance (N,)."""
        xs, rs = [], []
        n = self.config.crop_px
        for solid, p in zip(self.solids, params, strict=True):
            centre = solid.centre.to(p["t"].dtype) + p["t"]
            Pw, crops = [], []
            for P, fx, im in zip(self.P, self.fx, self.images, strict=True):
                Pc, uv, half = window_torch(P, centre, fx, self.config)
                Pw.append(Pc)
                crops.append(crop_torch(im, uv.cpu(), half.cpu(), n).to(self.device))
            xs.append(torch.stack(crops))
            rs.append(_render(solid, p, torch.stack(Pw), n, self.renderer))
        x = standardise(torch.stack(xs))
        r = standardise(torch.stack(rs))
        return self.net.masd(x, r)
