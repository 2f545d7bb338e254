"""Surface distances and similarity alignment against cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from SpineDARTLib.errors import UserError
from SpineDARTLib.surface import apply, similarity_align, surface_distances


def _sphere(r: float, centre=(0.0, 0.0, 0.0)):
    s = trimesh.creation.icosphere(subdivisions=5, radius=r)
    return np.asarray(s.vertices) + np.asarray(centre), np.asarray(s.faces)


def test_concentric_spheres_give_the_radius_gap():
    d = surface_distances(_sphere(20.0), _sphere(21.5), n_samples=5000, seed=1)
    # Exact point-to-triangle distances: the gap is 1.5 mm everywhere (up to the facets' sag).
    assert d.assd == pytest.approx(1.5, abs=0.05) and d.hd95 == pytest.approx(1.5, abs=0.06)
    assert d.nsd1 == 0.0 and d.nsd2 == 1.0
    same = surface_distances(_sphere(20.0), _sphere(20.0), n_samples=5000)
    assert same.assd < 1e-6 and same.nsd1 == 1.0


def test_directed_distances_and_hd95_see_a_local_bump():
    box = trimesh.creation.box(extents=(40, 30, 20))
    bigger = trimesh.creation.box(extents=(40, 30, 26))  # top and bottom 3 mm further out
    d = surface_distances((box.vertices, box.faces), (bigger.vertices, bigger.faces), n_samples=8000)
    assert d.hd95 == pytest.approx(3.0, abs=0.05)
    assert 0.0 < d.nsd2 < 1.0 and d.mean_a_to_b < 3.0


def test_similarity_alignment_recovers_a_scaled_rotated_copy():
    box = trimesh.creation.box(extents=(40, 24, 12))
    cyl = trimesh.creation.cylinder(
        radius=5, height=30, transform=trimesh.transformations.translation_matrix((15, 0, 10))
    )
    shape = trimesh.util.concatenate([box, cyl])  # asymmetric, so the pose is unique
    v, f = np.asarray(shape.vertices), np.asarray(shape.faces)
    m = np.eye(4)
    m[:3, :3] = 1.15 * Rotation.from_rotvec(np.radians(9.0) * np.array([0.3, -0.5, 0.8]) / np.sqrt(0.98)).as_matrix()
    m[:3, 3] = (4.0, -3.0, 2.0)
    moved = (apply(m, v), f)
    matrix, cost = similarity_align((v, f), moved, n_samples=3000, seed=0)
    assert cost < 0.05
    assert np.abs(apply(matrix, v) - moved[0]).max() < 0.3
    assert np.cbrt(np.linalg.det(matrix[:3, :3])) == pytest.approx(1.15, abs=0.01)


def test_bad_meshes_get_one_line():
    with pytest.raises(UserError, match="not a triangle mesh"):
        surface_distances((np.zeros((0, 3)), np.zeros((0, 3), int)), _sphere(1.0))
    v, f = _sphere(5.0)
    v = v.copy()
    v[3] = np.nan
    with pytest.raises(UserError, match="non-finite"):
        surface_distances((v, f), _sphere(5.0))
