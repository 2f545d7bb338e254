"""The ``gsplat`` backend (CUDA only).

gsplat's rasteriser alpha-composites front to back, which is not X-ray physics (an order-independent
sum). This backend therefore uses gsplat only where it is available and CUDA is present, and is
refused with a clear message elsewhere; the torch backend is the default on every device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from .renderer import RenderResult, SplatRenderer


def require_gsplat() -> None:
    if not torch.cuda.is_available():
        raise UserError(
            "the gsplat renderer needs a CUDA GPU and none is available",
            "use the default torch backend (--backend torch), which runs on the CPU",
        )
    try:
        import gsplat  # noqa: F401
    except ImportError as exc:
        raise UserError(
            "the gsplat renderer is not installed", "pip install 'spinedart[gpu]' on a CUDA machine"
        ) from exc


def render_gsplat(renderer: SplatRenderer, *args, **kwargs) -> RenderResult:  # pragma: no cover - CUDA only
    raise UserError(
        "the gsplat additive-accumulation backend is not implemented yet",
        "use the default torch backend (it also runs on CUDA)",
    )
