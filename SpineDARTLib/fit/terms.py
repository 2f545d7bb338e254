"""Names of the fit's image terms (``--loss``): a light module, so options are checked before
torch is imported."""

from __future__ import annotations

from ..errors import UserError

# Image terms of the ``fit`` method, joined by "+"; landmarks and the shape prior are always on.
# "combined" is all three.
LOSS_TERMS = ("analytic", "mask", "learned")
DEFAULT_LOSS = "analytic+mask"


def loss_terms(loss: str) -> tuple[str, ...]:
    """The image terms named by ``loss`` ("analytic+mask", "learned", "combined", ...)."""
    names = LOSS_TERMS if loss == "combined" else tuple(x.strip() for x in loss.split("+"))
    bad = [x for x in names if x not in LOSS_TERMS]
    if bad or not names or len(set(names)) != len(names):
        raise UserError(
            f"unknown fit loss {loss!r}", f"join {', '.join(LOSS_TERMS)} with '+' (e.g. analytic+mask), or 'combined'"
        )
    return names


def bench_method_loss(method: str) -> tuple[str, str | None]:
    """(fit method, loss) of a benchmark method name: ``fit``, ``ncc``, ``geoplan`` or ``fit:LOSS``."""
    if method in ("fit", "ncc", "geoplan"):
        return method, None
    if method.startswith("fit:"):
        loss_terms(method[4:])
        return "fit", method[4:]
    raise UserError(f"--method {method!r} is unknown", "use fit, ncc, geoplan, fit:LOSS (e.g. fit:learned) or both")


def uses_learned(method: str) -> bool:
    kind, loss = bench_method_loss(method)
    return kind == "fit" and loss is not None and "learned" in loss_terms(loss)
