"""A researcher's own cases for ``spinedart bench --case-labels/--case-ct``: one file each, or folders.

Folders hold one case per label map, found in either layout (both may be mixed):

- flat: ``LABELS_DIR/<id>.nii.gz`` (a suffix ``_seg``, ``-seg``, ``_labels``, ``_seg-vert_msk``
  or ``_msk`` is dropped from the id), its CT ``CT_DIR/<id>.nii.gz`` (or ``<id>_ct.nii.gz``);
- nested: ``LABELS_DIR/<id>/`` holding one label map (``labels``, ``seg``, ``segmentation``, or a
  name with ``seg``/``msk`` in it) and, when the same folder is given as ``--case-ct``, ``ct.nii.gz``.

A label map without its CT is refused before anything runs (the fix names the file); a label map
that is unusable (another convention, no vertebra) is listed as skipped by the run, not fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..ssm.members import LABEL_MAP_NAME
from ..xray.sidecar import image_stem as _stem

NIFTI = (".nii.gz", ".nii")
_LABEL_SUFFIX = re.compile(r"([_-](seg-vert_msk|seg|labels?|msk|mask|segmentation))$", re.IGNORECASE)
_LABEL_NAMES = ("labels", "label", "seg", "segmentation")


@dataclass(frozen=True)
class UserCase:
    """One case: its id (from the file or folder name), label map and CT (None: HU from labels)."""

    case_id: str
    labels: Path
    ct: Path | None


def _niftis(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(NIFTI))


def _nested_labels(folder: Path) -> Path | None:
    files = _niftis(folder)
    for f in files:
        if _stem(f).lower() in _LABEL_NAMES:
            return f
    tagged = [f for f in files if LABEL_MAP_NAME.search(_stem(f))]
    return tagged[0] if len(tagged) == 1 else None


def _ct_for(case: UserCase, ct_dir: Path, nested: bool) -> Path | None:
    cid = case.case_id
    names = ["ct", f"{cid}_ct", cid] if nested else [f"{cid}_ct", f"{cid}-ct", cid]
    where = ct_dir / cid if nested else ct_dir
    for n in names:
        for ext in NIFTI:
            f = where / f"{n}{ext}"
            # Never the label map itself (a flat folder given as both --case-labels and --case-ct).
            if f.is_file() and f.resolve() != case.labels.resolve():
                return f
    return None


def find_cases(labels: Path, ct: Path | None) -> list[UserCase]:
    """The cases named by ``--case-labels`` (a file or a folder) and ``--case-ct`` (a file, a folder, or
    None for ``--hu-from-labels``)."""
    if labels.is_file():
        if ct is not None and ct.is_dir():
            raise UserError(
                "--case-labels is a file but --case-ct is a folder", "give both as files or both as folders"
            )
        return [UserCase(_LABEL_SUFFIX.sub("", _stem(labels)), labels, ct)]
    if not labels.is_dir():
        raise UserError("file not found", "check the path", labels)
    if ct is not None and not ct.is_dir():
        raise UserError("--case-labels is a folder but --case-ct is a file", "give both as folders or as files")
    found: list[UserCase] = []
    for f in _niftis(labels):
        stem = _stem(f).lower()
        if stem == "ct" or stem.endswith(("_ct", "-ct")):
            continue  # a CT beside its label map (both flags may name one folder)
        case_id = _LABEL_SUFFIX.sub("", _stem(f))
        found.append(UserCase(case_id, f, None))
    for sub in sorted(p for p in labels.iterdir() if p.is_dir()):
        lab = _nested_labels(sub)
        if lab is not None:
            found.append(UserCase(sub.name, lab, None))
        elif _niftis(sub):
            # NIfTI files (a CT alone included) but none that says it is the label map: not silently left out.
            raise UserError(f"cannot tell which file in {sub.name}/ is the label map",
                            "name it labels.nii.gz (or seg.nii.gz)", sub)  # fmt: skip
    if not found:
        raise UserError(
            "no label map in this folder",
            "put one NIfTI label map per case in it (<id>.nii.gz), or one sub-folder per case",
            labels,
        )
    ids = [c.case_id for c in found]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise UserError(f"two label maps are both case {dup[0]!r}", "rename one of them", labels)
    if ct is None:
        return found
    out = []
    for c in found:
        ct_file = _ct_for(c, ct, nested=c.labels.parent != labels)
        if ct_file is None:
            raise UserError(f"case {c.case_id!r} has no CT in {ct}", f"add {c.case_id}.nii.gz there, or drop --case-ct "
                            "and use --hu-from-labels", c.labels)  # fmt: skip
        out.append(UserCase(c.case_id, c.labels, ct_file))
    return out
