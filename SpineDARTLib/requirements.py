"""The library's Python requirements inside 3D Slicer: which are missing, and a guarded install.

Standard library only, on purpose: the SpineDART module calls this before any other part of the
library can be imported, and passes in Slicer's own installers (pip through ``slicer.packaging`` or
``slicer.util.pip_install``, torch through the PyTorch extension), so nothing here imports ``slicer``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Provided by Slicer (numpy, vtk) and by the PyTorch extension (torch, torchvision): never
# installed or upgraded from here, whatever requirements.txt says.
NOT_INSTALLED_BY_SPINEDART = frozenset({"torch", "torchvision", "vtk", "numpy"})

MINIMUM_PYTHON = (3, 11)


def requirement_name(spec: str) -> str:
    """Normalised distribution name of a requirement specifier ("scikit-image>=0.22" -> "scikit-image")."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    if not match:
        raise ValueError(f"not a requirement specifier: {spec!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirement_satisfied(spec: str) -> bool:
    """Whether an installed distribution satisfies the specifier (presence only without `packaging`)."""
    try:
        installed = importlib.metadata.version(requirement_name(spec))
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return True
    return Requirement(spec).specifier.contains(installed, prereleases=True)


def read_requirements(path: Path) -> list[str]:
    """Requirement specifiers of a requirements.txt, minus what Slicer provides."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec and requirement_name(spec) not in NOT_INSTALLED_BY_SPINEDART:
            out.append(spec)
    return out


def missing_requirements(path: Path) -> list[str]:
    return [spec for spec in read_requirements(path) if not requirement_satisfied(spec)]


def constraint_pins() -> list[str]:
    """``name==version`` of what Slicer and the PyTorch extension installed, so that no requirement
    can upgrade or replace them (a pip constraints file)."""
    pins = []
    for name in sorted(NOT_INSTALLED_BY_SPINEDART):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.append(f"{name}=={importlib.metadata.version(name)}")
    return pins


def ensure_requirements(path: Path, install: Callable[[list[str]], bool], ensure_torch: Callable[[], None]) -> bool:
    """Make the requirements of ``path`` importable: ``ensure_torch()`` first (it raises when torch
    cannot be had), then ``install(missing)`` (False: the user declined, and so does this). Raises
    RuntimeError with a one-line message when the Python is too old or an install left a package
    missing."""
    if sys.version_info < MINIMUM_PYTHON:
        raise RuntimeError(
            "SpineDART needs Python {}.{} or later and this Slicer runs Python {}.{}: "
            "install a recent Slicer release".format(*MINIMUM_PYTHON, *sys.version_info[:2])
        )
    ensure_torch()
    missing = missing_requirements(path)
    if not missing:
        return True
    if not install(missing):
        return False
    importlib.invalidate_caches()
    still = missing_requirements(path)
    if still:
        raise RuntimeError(f"these Python packages could not be installed: {', '.join(still)}; see the Python console")
    return True


def install_in_slicer(
    missing: list[str], ask: bool, util: Any, packaging: Any | None = None, tr: Callable[[str], str] = str
) -> bool:
    """Install ``missing`` with Slicer's own installer, under a constraints file that pins what
    Slicer and the PyTorch extension provide. ``packaging`` is ``slicer.packaging`` where this Slicer
    has it: its ``pip_ensure`` asks (when ``ask``), shows progress and offers a restart itself;
    older Slicer: ``util.confirmOkCancelDisplay`` then ``util.pip_install``. False: the user declined.
    ``tr`` translates the question (the module's ``slicer.i18n.tr``)."""
    with tempfile.TemporaryDirectory(prefix="spinedart-pip-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(constraint_pins()) + "\n", encoding="utf-8")
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            try:
                packaging.pip_ensure(missing, constraints=constraints, prompt_install=ask, requester="SpineDART")
            except RuntimeError:  # pip_ensure's way of saying the user declined
                return False
            return True
        question = tr(
            "SpineDART needs these Python packages, which are not installed yet:\n\n{packages}\n\n"
            "Install them now? This may take a few minutes."
        ).format(packages="\n".join(missing))
        if ask and not util.confirmOkCancelDisplay(question, windowTitle="SpineDART"):
            return False
        with util.WaitCursor():
            util.pip_install(["-c", str(constraints), *missing])
    return True


def ensure_torch_in_slicer(ask: bool, import_module: Callable[[str], Any] = importlib.import_module) -> None:
    """torch and torchvision come from Slicer's PyTorch extension (``PyTorchUtils``, which picks the
    build for this machine's CUDA), never from requirements.txt. Raises RuntimeError, one line, when
    the extension is missing or the user declined."""
    if all(importlib.util.find_spec(name) is not None for name in ("torch", "torchvision")):
        return
    try:
        utils = import_module("PyTorchUtils")
    except ImportError:
        raise RuntimeError("SpineDART needs the PyTorch extension: install it (Extensions Manager)") from None
    if utils.PyTorchUtilsLogic().installTorch(askConfirmation=ask) is None:
        raise RuntimeError("PyTorch was not installed: SpineDART cannot plan without it")
