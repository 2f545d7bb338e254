"""Building a shape model from generated vertebrae: consistent correspondences, held-out
reconstruction, annotation transfer, size kept, and the quality gate."""

from __future__ import annotations

import numpy as np
import pytest

from SpineDARTLib.anatomy import PART_NAMES, generate
from SpineDARTLib.anatomy.landmarks import annotate_mesh
from SpineDARTLib.errors import UserError
from SpineDARTLib.ssm import ANNOTATIONS
from SpineDARTLib.ssm.build import Member, build_model, correspond
from SpineDARTLib.ssm.pca import _rigid
from SpineDARTLib.surface import surface_distances


def _annotations(v, f):
    an = annotate_mesh(v, f)
    return np.array(
        [an.landmarks[k] for k in ANNOTATIONS[:10]]
        + [an.trajectories[s][p] for s in ("left", "right") for p in ("entry", "target")]
    )


def _member(seed, scale=1.0):
    ph = generate("L3", seed, 1.5)
    c = ph.vertices.mean(0)
    v = c + scale * (ph.vertices - c)
    return Member(f"L3-seed{seed}", "L3", v, ph.faces, _annotations(v, ph.faces)), ph


@pytest.fixture(scope="module")
def built():
    import trimesh

    members = [_member(s)[0] for s in range(1, 13)]
    # A segmentation leak: the vertebra with a detached 18 mm blob under it (what a failed label
    # map looks like). The coherent deformation cannot reach it, so the gate drops the member.
    base = members[0]
    blob = trimesh.creation.icosphere(3, radius=18.0)
    bv = np.asarray(blob.vertices) + base.vertices.mean(0) + [0.0, 0.0, -60.0]
    bad = Member("leaky-label", "L3", np.vstack([base.vertices, bv]),
                 np.vstack([base.faces, np.asarray(blob.faces) + len(base.vertices)]), base.annotations)  # fmt: skip
    tp = generate("L3", 0, 3.0)
    model, excluded = build_model(
        [*members, bad], tp.vertices, tp.faces, tp.labels, _annotations(tp.vertices, tp.faces), ANNOTATIONS,
        n_modes=8, iterations=1, seed=0,
    )  # fmt: skip
    return model, excluded, members


def _fit(model, member):
    v, _ = correspond(model.mean[: model.n_surface], model.faces, model.mean[model.annotation_slice], member,
                      np.random.default_rng(0))  # fmt: skip
    x = np.vstack([v, member.annotations])
    sa = slice(0, model.n_surface + model.n_annotations)
    R, t = _rigid(x, model.mean[sa])
    fit = model.instance(model.project(x @ R.T + t))[sa]
    return (fit - t) @ R  # back in the member's frame


def test_quality_gate_excludes_a_non_vertebra(built):
    model, excluded, _ = built
    assert [e["name"] for e in excluded] == ["leaky-label"] and excluded[0]["residual_mm"] > 1.5
    assert model.card["n_members"] == 12 and model.card["excluded_members"] == excluded


def test_correspondences_land_on_the_same_part(built):
    model, _, members = built
    from scipy.spatial import cKDTree

    left = model.part_labels == PART_NAMES.index("pedicle_left")
    spinous = model.part_labels == PART_NAMES.index("spinous_process")
    for m in members[:3]:
        ph = generate("L3", int(m.name.split("seed")[1]), 1.5)
        v, _ = correspond(model.mean[: model.n_surface], model.faces, model.mean[model.annotation_slice], m,
                          np.random.default_rng(1))  # fmt: skip
        _, nn = cKDTree(ph.vertices).query(v)
        assert np.mean(ph.labels[nn[left]] == PART_NAMES.index("pedicle_left")) > 0.6
        assert np.mean(ph.labels[nn[spinous]] == PART_NAMES.index("spinous_process")) > 0.8


@pytest.mark.parametrize("scale", [1.0, 1.1])
def test_held_out_vertebra_is_reconstructed_at_its_size(built, scale):
    model, _, _ = built
    member, _ = _member(77, scale)
    fit = _fit(model, member)
    d = surface_distances((fit[: model.n_surface], model.faces), (member.vertices, member.faces), n_samples=5000)
    assert d.assd < 1.0, d
    err = np.linalg.norm(fit[model.n_surface :] - member.annotations, axis=1)
    # Measured with this small model (12 members, 8 modes, one iteration): mean 1.0-1.6 mm, worst
    # point (SPT, an entry) 2.7-4.3 mm. The target (every point < 1.5 mm with 15 modes) is
    # not met yet: these bounds only guard against regressions.
    print(dict(zip(ANNOTATIONS, err.round(2), strict=True)))
    assert err.mean() < 2.0 and err.max() < 5.0, dict(zip(ANNOTATIONS, err.round(2), strict=True))


def test_too_few_members():
    m, _ = _member(3)
    tp = generate("L3", 0, 3.0)
    with pytest.raises(UserError, match="cannot give"):
        build_model([m, m], tp.vertices, tp.faces, tp.labels, m.annotations, ANNOTATIONS, n_modes=5)
