"""User-facing errors: one line that names the file and the fix.

Every mistake a user can make (missing calibration, a corrupt file, a bad option) is raised as a
:class:`UserError`; the CLI prints ``spinedart: error: <message>`` and exits with code 2. Library
code never lets such a mistake surface as a traceback.
"""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input, reported as one line with the fix."""

    def __init__(self, problem: str, fix: str = "", path: str | Path | None = None) -> None:
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ")
        self.path = None if path is None else str(path)
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = f"{self.path}: " if self.path else ""
        text = f"{where}{self.problem}"
        if self.fix:
            text += f"; fix: {self.fix}"
        # Keep it to one line whatever the inputs contained.
        return " ".join(text.split())


class GeometryError(UserError):
    """Missing, non-finite, degenerate or contradictory imaging geometry."""


class ImageFileError(UserError):
    """An image file that cannot be read, or holds unusable pixels."""


class SchemaError(UserError):
    """A project file that does not follow its versioned schema."""


def describe_error(exc: BaseException) -> tuple[str, str | None]:
    """(one-line message, details) for a panel or a log: details is a traceback for a bug, None for
    a user's mistake (a :class:`UserError` already says what to fix)."""
    import traceback

    if isinstance(exc, UserError):
        return exc.one_line(), None
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    return message, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
