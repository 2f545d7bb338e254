"""Deposit-and-blur rasterisation of near-isotropic footprints (the fast path of a solid model).

A solid vertebra model is thousands of isotropic Gaussians of one size; their footprints differ only
by the depth's magnification (a few per cent) and by a slight off-axis stretch. Evaluating each
footprint on its own patch costs one exp, one scatter and one gather per patch pixel (~120 pixels per
Gaussian at 256²). Here each footprint's 2D mass is instead **deposited** on the pixel grid and
blurred once per image:

- bilinear weights on the four pixels around the mean preserve the mass and the mean exactly; they
  add a variance f(1 − f) per axis (f: the sub-pixel offset), which is taken off the blur the
  footprint receives, so its second moment is right too;
- the blur a footprint needs, its isotropic variance (a + c)/2 less that deposit variance, is
  interpolated linearly between a few **layers** of fixed variance (≤ 10 % apart), each blurred by
  a separable Gaussian kernel (normalised, truncated at ``truncation`` σ); the mixture of two close
  Gaussians has exactly the wanted variance.

The image is the same sum of footprints as the patch rasteriser's to within a fraction of a per
cent of its peak (a test bounds it), for ~30× fewer scattered values. It is used only where every
footprint is isotropic within ``iso_tol`` (relative spread of the 2D covariance's eigenvalues) and
at least ``MIN_SIGMA_PX`` wide: narrower footprints are not resolved by a bilinear deposit. The
image is piecewise linear in the means between pixel centres (the gradient of a mean is a
difference of blurred neighbours), which sums smoothly over a solid's thousands of points.
"""

from __future__ import annotations

import math

import torch

from .project import Projected

DEFAULT_ISO_TOL = 0.05
MIN_SIGMA_PX = 0.8
MAX_LAYERS = 12
LAYER_STEP = 0.20  # relative variance step between blur layers (a fixed geometric grid)


@torch.no_grad()
def _visible(proj: Projected, image_size: tuple[int, int], truncation: float) -> torch.Tensor:
    """(V, N) footprints in front of the source whose truncated extent reaches the image."""
    W, H = image_size
    r = truncation * torch.sqrt(torch.maximum(proj.cov2d[..., 0, 0], proj.cov2d[..., 1, 1]).clamp_min(0))
    u, v = proj.mean2d[..., 0], proj.mean2d[..., 1]
    on = (u > -0.5 - r) & (u < W - 0.5 + r) & (v > -0.5 - r) & (v < H - 0.5 + r)
    return proj.valid & (proj.amplitude > 0) & on


@torch.no_grad()
def layered_eligible(
    proj: Projected, image_size: tuple[int, int], truncation: float, iso_tol: float = DEFAULT_ISO_TOL
) -> bool:
    """Whether every footprint reaching the image is isotropic within ``iso_tol``, at least
    ``MIN_SIGMA_PX`` wide, and the spread of sizes needs at most ``MAX_LAYERS`` blur layers."""
    keep = _visible(proj, image_size, truncation)
    if not bool(keep.any()):
        return False
    a, b, c = (proj.cov2d[..., i, j][keep] for i, j in ((0, 0), (0, 1), (1, 1)))
    half = 0.5 * (a + c)
    spread = torch.sqrt((0.5 * (a - c)) ** 2 + b * b)
    if float((spread / half).max()) > iso_tol or float(half.min()) < MIN_SIGMA_PX**2:
        return False
    lo, hi = float(half.min()) - 0.25, float(half.max())  # the deposit takes up to 1/4 px² off
    return _n_layers(lo, hi) <= MAX_LAYERS


def _layer_range(lo: float, hi: float) -> tuple[int, int]:
    """Indices k of the layers v_k = (1 + LAYER_STEP)^k px² spanning [lo, hi]. The grid is fixed,
    not fitted to the data, so the image stays a continuous function of the footprints' sizes."""
    step = math.log1p(LAYER_STEP)
    k_lo = math.floor(math.log(lo) / step)
    return k_lo, max(k_lo + 1, math.ceil(math.log(hi) / step))


def _n_layers(lo: float, hi: float) -> int:
    k_lo, k_hi = _layer_range(lo, hi)
    return k_hi - k_lo + 1


def _fft_size(n: int) -> int:
    """The smallest 2^a·3^b ≥ n (fast FFT lengths)."""
    while True:
        m = n
        for p in (2, 3):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _kernel_spectra(variances: torch.Tensor, radius: int, h: int, w: int) -> torch.Tensor:
    """(L, h, w//2+1) spectra of the layers' separable blur: normalised sampled Gaussians truncated at
    ``radius``, centred on index 0 (negative offsets wrap to the end)."""
    d = torch.arange(-radius, radius + 1, dtype=variances.dtype, device=variances.device)
    k = torch.exp(-0.5 * d[None, :] ** 2 / variances[:, None])
    k = k / k.sum(dim=1, keepdim=True)
    kx = torch.zeros(len(variances), w, dtype=k.dtype, device=k.device)
    ky = torch.zeros(len(variances), h, dtype=k.dtype, device=k.device)
    kx[:, d.long() % w] = k
    ky[:, d.long() % h] = k
    return torch.fft.fft(ky)[:, :, None] * torch.fft.rfft(kx)[:, None, :]


def rasterize_layered(
    proj: Projected,
    instance: torch.Tensor,
    n_instances: int,
    image_size: tuple[int, int],
    truncation: float,
) -> torch.Tensor:
    """Per-instance images (V, I, H, W); call only where :func:`layered_eligible` holds."""
    W, H = int(image_size[0]), int(image_size[1])
    V, N = proj.amplitude.shape
    dev, dt = proj.amplitude.device, proj.amplitude.dtype
    a, b, c = proj.cov2d[..., 0, 0], proj.cov2d[..., 0, 1], proj.cov2d[..., 1, 1]
    mass2d = proj.amplitude * (2 * torch.pi) * torch.sqrt((a * c - b * b).clamp_min(1e-12))
    u, v = proj.mean2d[..., 0], proj.mean2d[..., 1]
    half = 0.5 * (a + c)  # the isotropic variance each footprint is drawn with (keeps its trace)
    with torch.no_grad():
        keep = _visible(proj, (W, H), truncation)
        lo, hi = float(half[keep].min()) - 0.25, float(half[keep].max())
        k_lo, k_hi = _layer_range(lo, hi)
        n_layers = k_hi - k_lo + 1
        layer_var = (1 + LAYER_STEP) ** torch.arange(k_lo, k_hi + 1, dtype=torch.float64, device=dev)
        radius = int(math.ceil(truncation * math.sqrt(float(layer_var[-1]))))
        pad = radius + 1
        x0, y0 = torch.floor(u), torch.floor(v)
        keep &= (x0 >= -pad) & (x0 + 1 <= W - 1 + pad) & (y0 >= -pad) & (y0 + 1 <= H - 1 + pad)
    Hf, Wf = _fft_size(H + 2 * pad), _fft_size(W + 2 * pad)
    # Dense over (view, Gaussian): dropped footprints deposit zero mass at a clamped place, which is
    # cheaper than gathering the kept ones (nearly all of them) and needs no special empty case.
    fx, fy = u - x0, v - y0
    # The blur each footprint still needs once the deposit has spread it by f(1 − f) per axis.
    need = half - 0.5 * (fx * (1 - fx) + fy * (1 - fy))
    with torch.no_grad():
        k0 = (torch.floor(torch.log(need.clamp_min(lo)) / math.log1p(LAYER_STEP)) - k_lo).clamp(0, n_layers - 2)
        v0 = layer_var.to(dt)[k0.long()]
        base = (torch.arange(V, device=dev)[:, None] * n_instances + instance[None, :]) * n_layers + k0.long()
        xi = (x0.clamp(-pad, W + pad - 2) + pad).long()
        yi = (y0.clamp(-pad, H + pad - 2) + pad).long()
        corner = torch.arange(2, device=dev)
        index = (
            ((base[..., None, None, None] + corner[:, None, None]) * Hf + (yi[..., None, None, None] + corner[:, None]))
            * Wf
            + xi[..., None, None, None]
            + corner
        )  # (V, N, layer, row, column)
    fk = ((need - v0) / (v0 * LAYER_STEP)).clamp(0, 1)  # v_(k+1) − v_k = v_k · step
    m = torch.where(keep, mass2d, torch.zeros_like(mass2d))
    wk = torch.stack([1 - fk, fk], dim=-1) * m[..., None]
    wy, wx = torch.stack([1 - fy, fy], dim=-1), torch.stack([1 - fx, fx], dim=-1)
    values = wk[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]
    canvas = torch.zeros(V * n_instances * n_layers * Hf * Wf, device=dev, dtype=dt)
    canvas = canvas.index_add(0, index.reshape(-1), values.reshape(-1))
    # Blur every layer and sum the layers in one pass of the Fourier domain: at these sizes two FFTs
    # per image cost a fraction of the grouped spatial convolutions (measured 4 vs 18 ms, fwd+bwd).
    # The canvas is padded by the kernel radius, so no image pixel sees the circular wrap.
    spectra = _kernel_spectra(layer_var.to(dt), radius, Hf, Wf)
    out = _LayerBlur.apply(canvas.view(V * n_instances, n_layers, Hf, Wf), spectra)
    return out.view(V, n_instances, Hf, Wf)[:, :, pad : pad + H, pad : pad + W]


class _LayerBlur(torch.autograd.Function):
    """y = Σ_ℓ k_ℓ ⊛ x_ℓ (circular). The kernels are real and symmetric, so the adjoint is the same
    blur of the output's gradient, once per layer: written out, it saves autograd's complex FFTs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, spectra: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(spectra)
        h, w = x.shape[-2:]
        return torch.fft.irfft2((torch.fft.rfft2(x) * spectra).sum(dim=1), s=(h, w))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        (spectra,) = ctx.saved_tensors
        h, w = grad.shape[-2:]
        return torch.fft.irfft2(torch.fft.rfft2(grad)[:, None] * spectra, s=(h, w)), None
