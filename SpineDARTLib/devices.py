"""Where the fit and the detector run: the user's choice (``auto``, ``cpu``, ``gpu``) → a torch device.

``auto`` takes a CUDA GPU when this Python's torch sees one, else the CPU; ``gpu`` without one is
refused with its fix rather than silently run on the CPU (the user asked for speed and would not
know why it did not come).
"""

from __future__ import annotations

from .errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "gpu")


def resolve_device(choice: str) -> str:
    """``auto`` / ``cpu`` / ``gpu`` → ``"cuda"`` or ``"cpu"``."""
    if choice not in DEVICE_CHOICES:
        raise UserError(f"device {choice!r} is unknown", "choose auto, cpu or gpu")
    import torch

    cuda = torch.cuda.is_available()
    if choice == "gpu" and not cuda:
        raise UserError(
            "device gpu: no CUDA GPU is available to this Python",
            "choose auto or cpu, or a worker Python whose torch has CUDA",
        )
    return "cuda" if choice == "gpu" or (choice == "auto" and cuda) else "cpu"
