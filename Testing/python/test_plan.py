"""The planner on generated vertebrae with rule-based trajectories: breach grades, clearances per
part (left/right kept apart), tip position, the fluoroscopic rule, the flag and its suggestions."""

from __future__ import annotations

import pytest

from SpineDARTLib.errors import UserError


@pytest.fixture(scope="module")
def vertebrae():
    from SpineDARTLib.anatomy.landmarks import annotate_mesh
    from SpineDARTLib.anatomy.phantom import generate
    from SpineDARTLib.geometry import CArmGeometry
    from SpineDARTLib.plan import Bone

    out = {}
    for level in ("L3", "T5"):
        ph = generate(level, 7, mesh_spacing_mm=1.0)
        ann = annotate_mesh(ph.vertices, ph.faces)
        bone = Bone(ph.vertices, ph.faces, ann.landmarks, ph.labels)
        annots = {f"{s}_{k}": ann.trajectories[s][k] for s in ("left", "right") for k in ("entry", "target")}
        iso = tuple(ann.landmarks["BC"])
        views = [
            CArmGeometry(a, 0, 620, 1020, (256, 256), (0.6, 0.6), (0, 0), isocenter_mm=iso).to_projection()
            for a in (0.0, 90.0)
        ]
        out[level] = (bone, annots, views)
    return out


def test_gauges_and_grades():
    from SpineDARTLib.plan import default_gauge, gr_grade
    from SpineDARTLib.plan.cannula import check_gauge

    assert [default_gauge(lv) for lv in ("T1", "T4", "T5", "T12", "L1", "L5")] == [15, 15, 13, 13, 11, 11]
    assert [gr_grade(b) for b in (0.0, 0.1, 1.99, 2.0, 3.9, 4.0, 6.0, 30.0)] == list("ABBCCDEE")
    with pytest.raises(UserError, match="12 G is not supported"):
        check_gauge(12)


def test_rule_based_paths_are_safe_in_a_lumbar_vertebra(vertebrae):
    from SpineDARTLib.plan import plan_vertebra

    bone, annots, views = vertebrae["L3"]
    vp = plan_vertebra("L3", bone, annots, True, "", views)
    assert vp.status == "go" and vp.gauge == 11 and vp.suggestion is None
    for p in vp.cannulas:
        assert p.safe, p.reasons
        assert p.check.grade == "A" and p.check.clearance_mm > 1.0 and p.check.tip_ok
        assert p.fluoro.ok and p.fluoro.ap_view == 0 and p.fluoro.posterior_wall_at_mm > 5.0
    d = vp.to_dict()
    assert [c["side"] for c in d["cannulas"]] == ["left", "right"] and d["cannulas"][0]["outer_diameter_mm"] == 3.05


def test_shifts_breach_the_wall_they_move_towards(vertebrae):
    """Left cannula moved 3 mm medially breaks into the canal; 3 mm laterally, through the left
    pedicle's own wall. A left/right mix-up of the parts would swap these."""
    from SpineDARTLib.plan import Cannula, check_cannula

    bone, annots, _ = vertebrae["L3"]
    x, _, _ = bone.axes()  # towards the patient's right
    e, t = annots["left_entry"], annots["left_target"]
    medial = check_cannula(bone, Cannula("left", e + 3.5 * x, t + 3.5 * x, 11))
    lateral = check_cannula(bone, Cannula("left", e - 4.5 * x, t - 4.5 * x, 11))
    assert medial.breach_mm > 0 and medial.grade != "A"
    assert medial.clearance_canal_mm < 0 and medial.clearance_canal_mm < medial.clearance_pedicle_mm - 0.3
    assert lateral.breach_mm > 0 and lateral.clearance_pedicle_mm < 0 < lateral.clearance_canal_mm


def test_short_or_steep_paths_are_flagged(vertebrae):
    from SpineDARTLib.plan import SAFETY_MARGIN_MM, Cannula
    from SpineDARTLib.plan.planner import assess

    bone, annots, views = vertebrae["L3"]
    e, t = annots["right_entry"], annots["right_target"]
    short = assess(bone, Cannula("right", e, e + 0.45 * (t - e), 11), views, SAFETY_MARGIN_MM)
    assert not short.safe and any("anterior half" in r for r in short.reasons)
    # Aimed through the canal at the opposite side: on AP the tip crosses the medial wall long
    # before the lateral view shows it past the posterior wall.
    x, y, _ = bone.axes()
    steep = assess(bone, Cannula("right", e, bone.landmarks["PWM"] - 4 * y - 10 * x, 11), views, SAFETY_MARGIN_MM)
    assert steep.fluoro.ok is False and "medial pedicle wall" in steep.fluoro.reason and not steep.safe


def test_suggestions(vertebrae):
    from SpineDARTLib.plan import plan_vertebra

    # T5 pedicles (~4.5 mm) leave < 1 mm around 13 G and even 15 G cannulas: not transpedicular.
    bone, annots, views = vertebrae["T5"]
    vp = plan_vertebra("T5", bone, annots, True, "", views)
    assert vp.gauge == 13 and vp.status == "no-go" and "costotransverse" in vp.suggestion
    assert all(not p.safe and "clearance" in p.reasons[0] and p.suggestion is None for p in vp.cannulas)
    # An L3 margin between the 11 G and 13 G clearances: the thinner cannula is suggested.
    bone, annots, views = vertebrae["L3"]
    c11 = plan_vertebra("L3", bone, annots, True, "", views).cannulas[0].check.clearance_mm
    vp = plan_vertebra("L3", bone, annots, True, "", views, margin_mm=c11 + 0.15)
    assert vp.cannulas[0].suggestion.startswith("a 13 G cannula passes")
    failed = plan_vertebra("L3", None, None, False, "landmark reprojection 9 mm > 6 mm")
    assert failed.status == "failed" and not failed.cannulas and "fit failed" in failed.suggestion
