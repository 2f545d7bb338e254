"""Provenance carried by every output: inputs' hashes, software version, seed, time."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import __version__


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def provenance(
    inputs: Iterable[str | Path] = (),
    seed: int | None = None,
    models: dict[str, str] | None = None,
    command: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-ready record of where an output came from.

    ``inputs`` are hashed (sha256) so an output can be traced to the exact files; ``models`` maps a
    model name to its version or hash.
    """
    record: dict[str, Any] = {
        "software": "spinedart",
        "software_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
        "models": dict(models or {}),
        "command": list(command) if command is not None else list(sys.argv),
    }
    record.update(extra)
    return record
