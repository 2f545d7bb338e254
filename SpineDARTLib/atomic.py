"""Atomic file output: write to a temporary file in the target folder, then rename.

A reader never sees a half-written file, and an interrupted writer leaves the previous file intact
(``os.replace`` is atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None, keep_name: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    For writers that need a file name (nibabel, pydicom, Pillow, VTK). The temporary name keeps
    the target's suffixes (``.nii.gz``) so that suffix-sniffing writers pick the right format;
    ``keep_name`` uses the exact final name inside a temporary folder, for writers that derive
    content from the name (an MRML bundle names its inner folder after the file).
    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_name:
        tmp_dir = Path(tempfile.mkdtemp(prefix=".spinedart-tmp-", dir=path.parent))
        tmp = tmp_dir / path.name
    else:
        tmp_dir = None
        if suffix is None:
            suffix = "".join(path.suffixes)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"{path}: the writer produced no data")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed and fsynced before the rename)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_npz(path: str | Path, arrays: dict[str, Any]) -> Path:
    """An ``.npz`` (readable by ``np.load``) written atomically, each member deflated and stamped
    with a fixed time, so the same arrays always give the same bytes (``np.savez`` stamps the
    current time)."""
    import io
    import zipfile

    import numpy as np

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.save(buf, np.asarray(arr))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())
    return atomic_write_bytes(path, out.getvalue())


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Serialise first, then write: a value that cannot be serialised never truncates the file."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)
