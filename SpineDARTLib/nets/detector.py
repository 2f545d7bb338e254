"""The X-ray annotation network: vertebra instances (overlapping masks), region, level and landmarks.

A ``timm`` Swin backbone sized to train on 2 CPU cores (default: embed 48, depths 2-2-2-2, window
8, ~5 M parameters; no pretrained weights exist here) and a small feature pyramid down to stride 4,
where every head is dense (CenterNet-style, one forward pass, any number of vertebrae). The input
is the normalised image and, when ``local_contrast`` > 0 (what ``train-detector`` trains by
default), its local contrast as a second channel (:func:`local_contrast`: on the same 48 scenes it
raised the held-out average precision 0.76 → 0.83 and 0.60 → 0.76 on views rendered with the CT
appearance randomisation; BENCHMARKS.md, detector's sixth run). The heads:

- ``centre``: heatmap of the vertebral bodies' centres (the projected BC landmark) + sub-cell offset;
- ``landmarks``: one heatmap per landmark type + sub-cell offsets, and at each centre the 10
  landmarks' displacements from it (to group heatmap peaks into vertebrae);
- ``paths``: at each centre the displacements of the two cannulas' entry and target points in this
  view (left entry, left target, right entry, right target) — the paper's 2D-GeoPlan baseline,
  triangulated across the two views;
- ``region`` (lumbar vs rib-bearing thoracic) and ``level`` (index T1=0 … L5=16, a regression: only
  a guess without an anchor) at each centre;
- instance masks, **overlapping** (projected vertebrae overlap): each centre predicts the weights of
  a dynamic 1×1 convolution over shared mask features and two coordinate channels relative to the
  centre (a CondInst-like head), so every vertebra gets its own sigmoid mask.
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
MASK_DIM = 8  # shared mask feature channels; a vertebra's dynamic filter has MASK_DIM + 2 + 1 weights
COORD_SCALE = 16.0  # cells: relative coordinates are divided by it before the dynamic filter
MAX_LOCAL_CONTRAST = 0.25  # σ as a fraction of the image side (3σ must stay inside the image)


@dataclass(frozen=True)
class DetectorConfig:
    image_size: int = 256
    embed_dim: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 8
    decoder_dim: int = 64
    # > 0: a second input channel, the image's local contrast (:func:`local_contrast`) at this
    # Gaussian scale (a fraction of the image side); 0: the normalised image alone.
    local_contrast: float = 0.0

    def __post_init__(self) -> None:
        # Checked here, where every configuration passes (command line, cards, the library): a wider
        # neighbourhood than a quarter of the side cannot be reflected at the borders.
        if not 0.0 <= self.local_contrast <= MAX_LOCAL_CONTRAST:
            raise UserError(
                f"--local-contrast {self.local_contrast} is out of range",
                f"give 0 (none) to {MAX_LOCAL_CONTRAST}, e.g. 0.08",
            )

    @property
    def stride(self) -> int:
        return 4

    @property
    def grid(self) -> int:
        return self.image_size // self.stride

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depths"], d["num_heads"] = list(self.depths), list(self.num_heads)
        if not d["local_contrast"]:  # the plain network reads as before the option (cards, checkpoints)
            del d["local_contrast"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorConfig:
        d = dict(d)
        d["depths"], d["num_heads"] = tuple(d["depths"]), tuple(d["num_heads"])
        return cls(**d)


HEADS = {  # name: channels
    "centre": 1,
    "centre_offset": 2,
    "landmarks": N_LANDMARKS,
    "landmark_offset": 2 * N_LANDMARKS,
    "displacement": 2 * N_LANDMARKS,
    "paths": 8,
    "region": 1,
    "level": 1,
    "mask_filter": MASK_DIM + 3,
    "mask_features": MASK_DIM,
}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU())


class Detector(nn.Module):
    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise UserError("the annotation network needs the timm package", "pip install 'timm>=1.0'") from exc

        if config.image_size % 32 or (config.image_size // 4) % config.window_size:
            raise ValueError("image_size must be a multiple of 32 and of 4 × window_size")
        self.config = config
        self.backbone = timm.create_model(
            "swin_tiny_patch4_window7_224",
            pretrained=False,
            features_only=True,
            img_size=config.image_size,
            embed_dim=config.embed_dim,
            depths=config.depths,
            num_heads=config.num_heads,
            window_size=config.window_size,
            in_chans=2 if config.local_contrast > 0 else 1,
        )
        chans = self.backbone.feature_info.channels()
        d = config.decoder_dim
        self.lateral = nn.ModuleList([nn.Conv2d(c, d, 1) for c in chans])
        self.smooth = nn.ModuleList([_block(d, d) for _ in chans[:-1]])
        # One shared 3×3 block, then a 1×1 convolution per head: nine 3×3 heads at stride 4 would
        # cost more than the whole backbone.
        self.trunk = _block(d, d)
        self.heads = nn.ModuleDict({name: nn.Conv2d(d, c, 1) for name, c in HEADS.items()})
        # Heatmaps start near their prior (few positives), as in CenterNet.
        for name in ("centre", "landmarks"):
            nn.init.constant_(self.heads[name].bias, -2.19)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` (B, 1, S, S) normalised line-integral images → dense head outputs at stride 4."""
        if self.config.local_contrast > 0:
            x = torch.cat([x, local_contrast(x, self.config.local_contrast * self.config.image_size)], 1)
        feats = [f.permute(0, 3, 1, 2) for f in self.backbone(x)]  # timm's Swin gives NHWC
        y = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            y = functional.interpolate(y, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            y = self.smooth[i](y + self.lateral[i](feats[i]))
        y = self.trunk(y)
        return {name: head(y) for name, head in self.heads.items()}


LOCAL_EPS = 1e-4  # variance floor: flat regions (std ≲ 1 % of the range) are not blown up to noise
LOCAL_CLIP = 4.0


def local_contrast(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B, 1, H, W) → each pixel's difference from its Gaussian neighbourhood's mean over that
    neighbourhood's standard deviation, clipped to ±4 and scaled to ±1. Why: bodies much larger
    than a vertebra (lungs, heart, shoulders, the table) shift and stretch an X-ray's intensities
    slowly, and the real chest's lateral views leave the bone a few per cent of the image's range;
    locally the bone's edges are what varies most whatever lies over them."""
    r = min(max(1, int(3 * sigma_px)), x.shape[-1] - 1, x.shape[-2] - 1)  # reflection needs r < the side
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = k / k.sum()

    def blur(y: torch.Tensor) -> torch.Tensor:
        # Separable, reflected borders: the square's edge is not made a step to zero (a letterboxed
        # image's padding still is a step to its minimum, in training as at inference).
        y = functional.conv2d(functional.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return functional.conv2d(functional.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))

    mean = blur(x)
    var = blur((x - mean) ** 2)
    return ((x - mean) / torch.sqrt(var + LOCAL_EPS)).clamp(-LOCAL_CLIP, LOCAL_CLIP) / LOCAL_CLIP


def coord_grid(g: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(2, g, g) cell coordinates (x, y) of a g×g grid."""
    ys, xs = torch.meshgrid(
        torch.arange(g, device=device, dtype=dtype), torch.arange(g, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys])


def instance_mask_logits(features: torch.Tensor, filters: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Mask logits (K, g, g) of K vertebrae of one image: ``features`` (MASK_DIM, g, g) shared,
    ``filters`` (K, MASK_DIM + 3) each vertebra's dynamic filter, ``centres`` (K, 2) in cells."""
    g = features.shape[-1]
    rel = (coord_grid(g, features.device, features.dtype)[None] - centres[:, :, None, None]) / COORD_SCALE
    w_feat, w_rel, bias = filters[:, :MASK_DIM], filters[:, MASK_DIM : MASK_DIM + 2], filters[:, -1]
    return torch.einsum("kc,cyx->kyx", w_feat, features) + (w_rel[:, :, None, None] * rel).sum(1) + bias[:, None, None]
