"""One locator for the files SpineDART ships (shape models, weights, the demo case).

The top-level ``Resources/`` folder reaches users two ways: inside the package as
``SpineDARTLib/_resources`` (a wheel; the Slicer extension's CMake install rules put it at the same
place), or as the source tree's ``Resources/`` beside ``SpineDARTLib/`` (a checkout or an editable
install). The package copy wins when both exist.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

_PACKAGE_DIR = Path(__file__).resolve().parent
_CANDIDATES = (_PACKAGE_DIR / "_resources", _PACKAGE_DIR.parent / "Resources")
# A folder counts only if it carries this marker: in a Slicer install tree the library's parent
# also holds a ``Resources/`` folder, the scripted modules' icons and UI files.
MARKER = "README.md"
_MARKER_TITLE = "# SpineDART shipped resources"


def _is_resources(folder: Path) -> bool:
    marker = folder / MARKER
    try:
        return marker.is_file() and marker.read_text(encoding="utf-8").startswith(_MARKER_TITLE)
    except OSError:
        return False


def resources_dir() -> Path:
    """The folder holding the shipped resources."""
    for c in _CANDIDATES:
        if _is_resources(c):
            return c
    raise UserError(
        f"shipped resources not found (looked in {', '.join(str(c) for c in _CANDIDATES)})",
        "reinstall spinedart (pip install spinedart, or the Slicer extension)",
    )


def resource_path(*parts: str) -> Path:
    """Path of a shipped file or folder; a clear error when the installation lacks it."""
    p = resources_dir().joinpath(*parts)
    if not p.exists():
        raise UserError(f"shipped resource {'/'.join(parts)} is missing", "reinstall spinedart", p)
    return p


def demo_case_dir() -> Path:
    """The bundled demo case (two calibrated X-rays with sidecars, their 2-D evidence and the truth)."""
    return resource_path("demo")
