"""Finding a researcher's cases in folders (``spinedart bench --case-labels DIR [--case-ct DIR]``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from SpineDARTLib.bench.user_cases import find_cases
from SpineDARTLib.errors import UserError


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_flat_and_nested_layouts_pair_each_label_map_with_its_ct(tmp_path):
    labels, cts = tmp_path / "labels", tmp_path / "cts"
    _touch(labels / "s0001_seg.nii.gz", labels / "verse004_seg-vert_msk.nii.gz", labels / "p3" / "labels.nii.gz",
           labels / "notes.txt", labels / "p3" / "ct.nii.gz")  # fmt: skip
    _touch(cts / "s0001.nii.gz", cts / "verse004_ct.nii.gz", cts / "p3" / "ct.nii.gz")
    found = {c.case_id: c for c in find_cases(labels, cts)}
    assert sorted(found) == ["p3", "s0001", "verse004"]
    assert found["s0001"].ct == cts / "s0001.nii.gz" and found["verse004"].ct == cts / "verse004_ct.nii.gz"
    assert found["p3"].labels == labels / "p3" / "labels.nii.gz" and found["p3"].ct == cts / "p3" / "ct.nii.gz"
    # No CT: HU from the labels (the caller checks --hu-from-labels).
    assert all(c.ct is None for c in find_cases(labels, None))
    # One folder for both: the CTs beside the label maps are not taken for label maps.
    both = tmp_path / "both"
    _touch(both / "a.nii.gz", both / "a_ct.nii.gz", both / "b" / "seg.nii.gz", both / "b" / "ct.nii.gz")
    found = {c.case_id: c for c in find_cases(both, both)}
    assert sorted(found) == ["a", "b"] and found["a"].ct == both / "a_ct.nii.gz"
    assert found["b"].ct == both / "b" / "ct.nii.gz"
    # A single file stays a single case.
    (one,) = find_cases(labels / "s0001_seg.nii.gz", cts / "s0001.nii.gz")
    assert one.case_id == "s0001"


@pytest.mark.parametrize(
    "make, ct, match",
    [
        (lambda d: _touch(d / "notes.txt"), None, "no label map in this folder"),
        (lambda d: _touch(d / "a.nii.gz"), "cts", "has no CT"),
        (lambda d: _touch(d / "a.nii.gz", d / "a_seg.nii.gz"), None, "both case 'a'"),
        (lambda d: _touch(d / "a.nii.gz"), "file", "--case-ct is a file"),
        (lambda d: _touch(d / "p1" / "ct.nii.gz", d / "p1" / "volume.nii.gz"), None, "which file in p1/"),
        (lambda d: _touch(d / "p1" / "a_seg.nii.gz", d / "p1" / "b_seg.nii.gz"), None, "which file in p1/"),
        (lambda d: _touch(d / "a.nii.gz", d / "p1" / "ct.nii.gz"), None, "which file in p1/"),
    ],
)
def test_folders_that_cannot_be_read_get_one_line(tmp_path, make, ct, match):
    labels = tmp_path / "labels"
    labels.mkdir()
    make(labels)
    ct_path = None
    if ct == "cts":
        ct_path = tmp_path / "cts"
        ct_path.mkdir()
    elif ct == "file":
        ct_path = tmp_path / "ct.nii.gz"
        _touch(ct_path)
    with pytest.raises(UserError, match=match):
        find_cases(labels, ct_path)
