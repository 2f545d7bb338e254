"""Vertebra label conventions: TotalSegmentator v2 and VerSe read, v1 and wrong orders refused."""

from __future__ import annotations

import numpy as np
import pytest

from SpineDARTLib.errors import UserError
from SpineDARTLib.labelmaps import TOTALSEG_V1, TOTALSEG_V2, VERSE, level_of, vertebra_levels


@pytest.fixture(scope="module")
def real_map():
    nib = pytest.importorskip("nibabel")
    from SpineDARTLib.realct import data_dir, label_ids

    img = nib.load(str(data_dir() / "mask.nii.gz"))
    # The id table agrees with the label map's own structures.csv (TotalSegmentator v2).
    ids = label_ids()
    assert all(ids[f"vertebrae_{lv}"] == i for lv, i in TOTALSEG_V2.items())
    return np.asarray(img.dataobj).astype(np.int16), img.affine.copy()


def _convert(lab, src, dst):
    out = np.zeros_like(lab)
    for lv, i in src.items():
        out[lab == i] = dst[lv]
    return out


def test_real_map_reads_as_totalsegmentator_v2(real_map):
    lab, A = real_map
    levels = vertebra_levels(lab, A, source="mask.nii.gz")
    assert {f"T{i}" for i in range(1, 13)} | {"L1", "L2"} <= set(levels)
    assert level_of(31) == "L1" and level_of(20, "verse") == "L1" and level_of(5) is None


def test_verse_ids_read_with_their_convention(real_map):
    lab, A = real_map
    verse = _convert(lab, TOTALSEG_V2, VERSE)
    assert vertebra_levels(verse, A, "verse") == {lv: VERSE[lv] for lv in vertebra_levels(lab, A)}
    with pytest.raises(UserError, match="no vertebra labels"):
        vertebra_levels(verse, A)  # VerSe ids read as TotalSegmentator: nothing in 26-50


def test_totalsegmentator_v1_is_refused(real_map):
    lab, A = real_map
    v1 = _convert(lab, TOTALSEG_V2, TOTALSEG_V1)
    with pytest.raises(UserError, match="TotalSegmentator v1"):
        vertebra_levels(v1, A, source="v1.nii.gz")
    # With other structures around it, the size check still catches the shifted levels.
    with_organs = v1.copy()
    with_organs[(lab > 0) & (lab < 18)] = lab[(lab > 0) & (lab < 18)]
    with pytest.raises(UserError, match="do not match"):
        vertebra_levels(with_organs, A)


def test_reversed_order_and_bad_convention_are_refused(real_map):
    lab, A = real_map
    flipped = A.copy()
    flipped[:3, 2] *= -1  # the file's z axis read backwards
    with pytest.raises(UserError, match="reverse order"):
        vertebra_levels(lab, flipped, source="labels.nii.gz")
    with pytest.raises(UserError, match="unknown"):
        vertebra_levels(lab, A, "nnunet")
