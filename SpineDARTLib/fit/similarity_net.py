"""The learned multi-view similarity (the paper's ViT loss): from both views, how far (MASD, mm) is
the current model instance from the vertebra in the X-rays?

Input per view: a square window of the X-ray around the instance, the splat rendering of the
instance alone in the same window, and where their edges agree (:func:`gradient_agreement`), as
three channels. The window is the projection of a
``crop_mm``-wide square at the instance's centre, parallel to the detector, resampled to
``crop_px`` pixels: its size follows the magnification, so the network sees the vertebra at about
the same size in every geometry; it is centred on the *current* instance (not differentiated: it
only says where to look). Each channel is standardised inside the window (X-ray units are
arbitrary). The two views are stacked one above the other into one (2·crop_px × crop_px) image
and a ``timm`` Vision Transformer reads both views' patches as one sequence, so attention fuses
the views from the first layer (position embeddings tell the views apart); a small convolutional
stem makes the tokens (``stem="conv"``).

The output is log MASD; :meth:`SimilarityNet.masd` gives mm and is differentiable w.r.t. the
renderings, so it is a loss for the fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..geometry.projection import Projection

CARD_SCHEMA = "spinedart.similarity-card/1"


@dataclass(frozen=True)
class SimilarityConfig:
    crop_px: int = 128
    crop_mm: float = 96.0  # side of the window at the instance's centre (world mm)
    patch: int = 16
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    drop_path: float = 0.05
    stem: str = "conv"  # "conv": three stride-2 convolutions before the tokens; "patch": ViT's linear patches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimilarityConfig:
        return cls(**d)


TINY = {"crop_px": 32, "crop_mm": 96.0, "patch": 8, "embed_dim": 16, "depth": 1, "num_heads": 1, "drop_path": 0.0}
STEM_STRIDE = 8
IN_CHANS = 3  # per view: X-ray, rendering, and where their edges agree (see gradient_agreement)


def gradient_agreement(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Pixel-wise product of the central-difference gradients of the X-ray and of the rendering
    (the summand of gradient correlation), standardised; zero on the border.

    Why a derived channel: measured on the training cases, the networks never found this
    multiplicative interaction themselves — a ViT and a plain CNN on (X-ray, rendering) alone both
    stayed at the constant predictor (validation ρ 0.1-0.2), while the same CNN with this channel
    reached validation ρ 0.72 within 300 steps."""

    def grads(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a[..., 1:-1, 2:] - a[..., 1:-1, :-2], a[..., 2:, 1:-1] - a[..., :-2, 1:-1]

    (xu, xv), (ru, rv) = grads(x), grads(r)
    g = torch.nn.functional.pad(xu * ru + xv * rv, (1, 1, 1, 1))
    return g / (g.std(dim=(-2, -1), keepdim=True) + 1e-3)


def _conv_stem(in_chans: int, embed_dim: int) -> nn.Sequential:
    """Three 3×3 stride-2 convolutions (BatchNorm, GELU): local edges and their agreement between
    the X-ray and the rendering are found here. Measured: the same ViT on linear patches trained
    from scratch on ~7 000 samples stayed at a constant predictor (validation ρ 0.1-0.2 after two
    epochs); transformers without a convolutional stem are known to need far more data."""
    widths = [max(8, embed_dim // 6), max(8, embed_dim // 3), max(8, (2 * embed_dim) // 3)]
    layers: list[nn.Module] = []
    cin = in_chans
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.GELU()]
        cin = w
    return nn.Sequential(*layers)


class SimilarityNet(nn.Module):
    def __init__(self, config: SimilarityConfig) -> None:
        super().__init__()
        from functools import partial

        from timm.layers import HybridEmbed
        from timm.models.vision_transformer import VisionTransformer

        self.config = config
        n = config.crop_px
        extra = {}
        patch = config.patch
        if config.stem == "conv":
            if config.patch % STEM_STRIDE:
                raise ValueError(f"a conv stem needs a patch size that is a multiple of {STEM_STRIDE}")
            stem = _conv_stem(IN_CHANS, config.embed_dim)
            extra["embed_layer"] = partial(HybridEmbed, backbone=stem, feature_ratio=STEM_STRIDE)
            patch = config.patch // STEM_STRIDE
        self.vit = VisionTransformer(
            img_size=(2 * n, n),
            patch_size=patch,
            in_chans=IN_CHANS,
            **extra,
            num_classes=1,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            drop_path_rate=config.drop_path,
            global_pool="avg",
        )

    def forward(self, xray: torch.Tensor, render: torch.Tensor) -> torch.Tensor:
        """log MASD (B,) from X-ray windows and renderings (B, 2 views, n, n), both standardised."""
        b, v, n, _ = xray.shape
        x = torch.stack([xray, render, gradient_agreement(xray, render)], dim=1)  # (B, C, views, n, n)
        return self.vit(x.reshape(b, IN_CHANS, v * n, n))[:, 0]

    def masd(self, xray: torch.Tensor, render: torch.Tensor) -> torch.Tensor:
        """Predicted MASD in mm (B,)."""
        return torch.exp(self.forward(xray, render).clamp(-5.0, 5.0))


@dataclass(frozen=True)
class Window:
    """A view's window: the crop's own projection and where its pixels lie in the full image."""

    projection: Projection  # of the crop (crop_px × crop_px)
    centre_uv: np.ndarray  # in the full image's pixels
    half_px: float  # half the window's side, full image pixels

    @property
    def scale(self) -> float:
        """Crop pixels per full-image pixel."""
        return self.projection.image_size[0] / (2.0 * self.half_px)


def window(projection: Projection, centre_mm: np.ndarray, config: SimilarityConfig) -> Window:
    """The window of ``projection`` around the world point ``centre_mm`` (see the module docstring).
    Crop pixel i has its centre at u = u_c − h + (i + ½)/s (s = crop_px / 2h). Computed by
    :func:`window_torch` (in float64), so training samples and the fit cut the same window."""
    fx = float(abs(projection.K[0, 0]))
    with torch.no_grad():
        P, uv, half = window_torch(torch.tensor(np.asarray(projection.P, float)),
                                   torch.tensor(np.asarray(centre_mm, float)), fx, config)  # fmt: skip
    n = config.crop_px
    s = n / (2.0 * float(half))
    du, dv = projection.pixel_spacing_mm
    crop = Projection(P.numpy(), (n, n), (du / s, dv / s), projection.isocenter_mm)
    return Window(crop, uv.numpy(), float(half))


def _filtered_region(image: np.ndarray, u: np.ndarray, v: np.ndarray, step: float):
    """The part of ``image`` under sample columns ``u`` and rows ``v`` (full-image pixels), Gaussian
    pre-filtered with σ = ½ ``step`` when the window shrinks the image (step > 1), and its origin
    (row, column); None where the window misses the image."""
    from scipy.ndimage import gaussian_filter

    img = np.asarray(image, np.float32)
    if step <= 1.0:
        return img, 0, 0
    # Only the part of the image under the window is filtered (an X-ray may be 2k × 2k).
    m = int(np.ceil(3 * step)) + 2
    r0, r1 = max(int(v.min()) - m, 0), min(int(v.max()) + m + 1, img.shape[0])
    c0, c1 = max(int(u.min()) - m, 0), min(int(u.max()) + m + 1, img.shape[1])
    if r1 <= r0 or c1 <= c0:
        return None
    return gaussian_filter(img[r0:r1, c0:c1], 0.5 * step, mode="nearest"), r0, c0


def crop_image(image: np.ndarray, win: Window) -> np.ndarray:
    """The X-ray resampled on the window's pixels (bilinear after a Gaussian pre-filter of σ = ½
    source pixels per crop pixel when the window shrinks the image; outside the image: its edge).
    Computed by :func:`crop_torch` (in float64), the fit's crop."""
    uv = torch.tensor(np.asarray(win.centre_uv, float))
    half = torch.tensor(float(win.half_px), dtype=torch.float64)
    with torch.no_grad():
        crop = crop_torch(image, uv, half, win.projection.image_size[0])
    return crop.numpy().astype(np.float32)


def window_torch(P: torch.Tensor, centre_mm: torch.Tensor, fx: float, config: SimilarityConfig):
    """:func:`window` as a differentiable function of the centre: (the crop's projection (3, 4),
    the centre's pixel (2,), half the side in full-image pixels) — what the fit needs so that the
    gradient of the predicted MASD w.r.t. translation includes the window's move (see
    :func:`crop_torch`)."""
    h = P[:, :3] @ centre_mm + P[:, 3]
    uv = h[:2] / h[2]
    half = 0.5 * config.crop_mm * fx / h[2]
    n = config.crop_px
    s = n / (2.0 * half)
    zero, one = torch.zeros_like(s), torch.ones_like(s)
    A = torch.stack([torch.stack([s, zero, s * (half - uv[0]) - 0.5]), torch.stack([zero, s, s * (half - uv[1]) - 0.5]),
                     torch.stack([zero, zero, one])])  # fmt: skip
    return A @ P, uv, half


def crop_torch(image: np.ndarray, uv: torch.Tensor, half: torch.Tensor, n: int) -> torch.Tensor:
    """The X-ray (``image``) resampled on the pixels of the window with centre ``uv`` and half side
    ``half`` (full-image pixels, tensors), as :func:`crop_image` describes, differentiable w.r.t.
    where the window is (the pre-filter is chosen from their current values, not differentiated).

    Why: the network was trained with the instance always at the window's centre, so a
    translation error shows in *where the X-ray's vertebra sits in the window* as much as in the
    rendering; a window that only follows the instance (not differentiated) hides that part of the
    gradient from the fit."""
    step = 2.0 * half / n
    i = torch.arange(n, dtype=uv.dtype, device=uv.device)
    u = uv[0] - half + (i + 0.5) * step
    v = uv[1] - half + (i + 0.5) * step
    region = _filtered_region(image, u.detach().cpu().numpy(), v.detach().cpu().numpy(), float(step.detach()))
    if region is None:
        return torch.full((n, n), float(np.mean(image)), dtype=uv.dtype, device=uv.device) + 0.0 * uv.sum()
    img, r0, c0 = region
    h, w = img.shape
    # grid_sample with align_corners=True: -1 and 1 are the centres of the first and last pixels
    # (pixel i at coordinate i); "border" repeats the image's edge beyond it.
    gx = 2.0 * (u - c0) / max(w - 1, 1) - 1.0
    gy = 2.0 * (v - r0) / max(h - 1, 1) - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
    src = torch.as_tensor(img, dtype=uv.dtype, device=uv.device)[None, None]
    return torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)[0, 0]


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation over the last two axes (a flat window stays flat)."""
    m = x.mean(dim=(-2, -1), keepdim=True)
    s = x.std(dim=(-2, -1), keepdim=True)
    return (x - m) / (s + 1e-3 * s.detach().amax().clamp_min(1e-6))


def load_similarity(path) -> tuple[SimilarityNet, dict[str, Any]]:
    """Weights and card (checked against each other), in evaluation mode."""
    from ..weights import load_checked

    state, card = load_checked(path, CARD_SCHEMA, "similarity")
    model = SimilarityNet(SimilarityConfig.from_dict(card["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    return model, card
