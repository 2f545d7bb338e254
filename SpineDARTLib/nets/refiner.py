"""The annotation network's second stage: one vertebra's landmarks and mask from a crop around it.

The first stage (:mod:`.detector`) sees a whole 3-13-vertebra scene at 256² and its landmark error
sits at ~7.5 mm (median, true centres) whatever the data: ~1.5 of its 5 mm heatmap cells. This stage
sees a ``crop_px``² window at ``mm_per_px`` (at the detector) centred where the first stage put a
vertebra and predicts, for the vertebra nearest the window's centre:

- the 10 landmarks by integral regression (a soft-argmax over one heatmap per landmark at stride 2:
  sub-pixel, and its loss is the error itself) with a predicted spread σ per landmark (Laplace
  likelihood: the landmark's expected error, which becomes its confidence);
- its mask (sigmoid logits at stride 2).

The backbone is ``timm``'s ``regnetx_002`` (no pretrained weights exist here) with a small top-down
decoder to stride 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional

from ..anatomy.landmarks import LANDMARKS
from ..errors import UserError

N_LANDMARKS = len(LANDMARKS)
LOG_SIGMA_RANGE = (-1.0, 4.0)  # crop pixels: σ from 0.37 to 55


@dataclass(frozen=True)
class RefinerConfig:
    crop_px: int = 128
    # At the detector; ±96 mm around the centre: of the landmarks of 10 training scenes, 90 % lie
    # within 71 mm of BC, 99 % within 116 mm (lateral views' spinous processes).
    mm_per_px: float = 1.5
    backbone: str = "regnetx_002"
    decoder_dim: int = 32

    @property
    def stride(self) -> int:
        return 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RefinerConfig:
        return cls(**d)


TINY_REFINER = {"crop_px": 32, "mm_per_px": 4.0, "decoder_dim": 16}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU())


class Refiner(nn.Module):
    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise UserError("the annotation network needs the timm package", "pip install 'timm>=1.0'") from exc
        if config.crop_px % 32:
            raise ValueError("crop_px must be a multiple of 32")
        self.config = config
        self.backbone = timm.create_model(config.backbone, pretrained=False, features_only=True, in_chans=1)
        chans = self.backbone.feature_info.channels()
        reductions = self.backbone.feature_info.reduction()
        if reductions[0] != config.stride:
            raise ValueError(f"{config.backbone}'s first features are at stride {reductions[0]}, not 2")
        d = config.decoder_dim
        self.lateral = nn.ModuleList([nn.Conv2d(c, d, 1) for c in chans])
        self.smooth = nn.ModuleList([_block(d, d) for _ in chans[:-1]])
        self.heatmaps = nn.Conv2d(d, N_LANDMARKS, 1)
        self.mask = nn.Conv2d(d, 1, 1)
        self.log_sigma = nn.Linear(chans[-1] + d, N_LANDMARKS)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` (B, 1, n, n) crops normalised per crop → ``points`` (B, L, 2) crop pixels (u, v),
        ``log_sigma`` (B, L) of crop pixels, ``mask`` (B, 1, n/2, n/2) logits."""
        feats = self.backbone(x)
        y = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            y = functional.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.smooth[i](y + self.lateral[i](feats[i]))
        logits = self.heatmaps(y)  # (B, L, g, g)
        b, n_lm, g, _ = logits.shape
        prob = torch.softmax(logits.flatten(2), -1).reshape(b, n_lm, g, g)
        cells = (torch.arange(g, dtype=x.dtype, device=x.device) + 0.5) * self.config.stride - 0.5  # crop px
        u = (prob.sum(2) * cells).sum(-1)
        v = (prob.sum(3) * cells).sum(-1)
        pooled = torch.cat([feats[-1].mean((2, 3)), y.mean((2, 3))], 1)
        log_sigma = self.log_sigma(pooled).clamp(*LOG_SIGMA_RANGE)
        return {"points": torch.stack([u, v], -1), "log_sigma": log_sigma, "mask": self.mask(y)}
