"""Robustness studies of the fit (issue 13 §3): calibration error, view separation, degraded images,
fractured targets. Every run is a resumable ``spinedart bench`` run (its records survive a stop);
this script runs them one after the other, then writes the table (markdown, stdout) and the plots.

.venv/bin/python Testing/bench/robustness.py --n 12 --seed 1000000 --work W --out R [--plots-only]

Scenes are shared: the calibration sweep, the degraded set and the separation set use the same
healthy scene seeds (the same anatomy), so the rows differ only in what is studied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (name, set, --perturb-geometry or None). The first row is the baseline of the calibration sweep.
CALIBRATION = [
    ("exact", None),
    ("angle 1°", "1,0,0"),
    ("angle 2°", "2,0,0"),
    ("distance 5 mm", "0,5,0"),
    ("distance 10 mm", "0,10,0"),
    ("offset 2 mm", "0,0,2"),
    ("offset 5 mm", "0,0,5"),
    ("1°, 5 mm, 2 mm", "1,5,2"),
    ("2°, 10 mm, 5 mm", "2,10,5"),
]
METRICS = ("dice_mean", "hd95_mean", "entry_err_mm", "target_err_mm", "angle_err_deg", "n_failed", "n_vertebrae")


def _folder(pert: str | None) -> str:
    """``exact`` or e.g. ``a2-d10-o5`` (angle °, distance mm, offset mm)."""
    if pert is None:
        return "exact"
    a, d, o = pert.split(",")
    return f"a{a}-d{d}-o{o}"


def runs(n: int, n_fractured: int) -> list[tuple[str, str, str | None, int]]:
    """(row name, set, perturbation, n) of every run."""
    out = [(f"ort · {name}", "synthetic-ort", pert, n) for name, pert in CALIBRATION]
    out.append(("ort · degraded images", "synthetic-ort-degraded", None, n))
    out.append(("separation", "synthetic-separation", None, n))
    out.append(("ort · fractured targets", "synthetic-fractured", None, n_fractured))
    return out


def run_all(args: argparse.Namespace) -> dict[str, dict]:
    from SpineDARTLib.bench.run import run_benchmark
    from SpineDARTLib.geometry.perturb import Miscalibration

    results = {}
    for name, set_name, pert, n in runs(args.n, args.n_fractured):
        out = args.out / f"{set_name}-{_folder(pert)}"
        out.mkdir(parents=True, exist_ok=True)
        if not args.plots_only:
            print(f"robustness: {name} ({set_name}, perturbation {pert})", file=sys.stderr, flush=True)
            wrong = Miscalibration.parse(pert) if pert else None
            run_benchmark(set_name, n, args.seed, ["fit"], args.work, out, miscalibration=wrong)
        f = out / "summary.json"
        if f.is_file():
            results[name] = json.loads(f.read_text())
    return results


def table(results: dict[str, dict]) -> str:
    lines = ["| run | fits | failed | Dice mean | HD95 mm | entry mm | target mm | angle ° |", "|---|" * 1 + "---|" * 7]

    def row(name: str, s: dict) -> str:
        f = [s.get(k) for k in METRICS]
        fmt = [f"{x:.3f}" if i == 0 else f"{x:.2f}" if i < 5 else str(x) for i, x in enumerate(f) if x is not None]
        d, h, e, t, a, nf, nv = fmt
        return f"| {name} | {nv} | {nf} | {d} | {h} | {e} | {t} | {a} |"

    for name, s in results.items():
        if name == "separation":
            for deg, sub in s.get("by_separation", {}).items():
                lines.append(row(f"separation {deg}° (AP + {deg}°)", sub))
        else:
            lines.append(row(name, s))
    return "\n".join(lines)


def _dice_and_entry(ax, xs: list[float], summaries: list[dict], xlabel: str) -> None:
    """Dice (left axis) and entry error (right axis, red) against one swept quantity."""
    ax.plot(xs, [s["dice_mean"] for s in summaries], "o-")
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax2 = ax.twinx()
    ax2.plot(xs, [s["entry_err_mm"] for s in summaries], "s--", color="tab:red")
    ax2.set_ylabel("entry error (mm)", color="tab:red")
    # One fixed scale on every panel: an autoscaled axis makes 0.05 mm look like a trend.
    ax2.set_ylim(0, max(6.0, 1.1 * max(s["entry_err_mm"] for s in summaries)))


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plots(results: dict[str, dict], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # 1. Calibration: one panel per error kind, against the error's size (0 = the exact baseline).
    kinds = [("angle (°)", ["exact", "angle 1°", "angle 2°"], [0, 1, 2]),
             ("source-detector distance (mm)", ["exact", "distance 5 mm", "distance 10 mm"], [0, 5, 10]),
             ("detector offset (mm)", ["exact", "offset 2 mm", "offset 5 mm"], [0, 2, 5])]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=True)
    for ax, (label, names, xs) in zip(axes, kinds, strict=True):
        got = [(x, results[f"ort · {nm}"]) for x, nm in zip(xs, names, strict=True) if f"ort · {nm}" in results]
        _dice_and_entry(ax, [x for x, _ in got], [s for _, s in got], label)
    axes[0].set_ylabel("Dice (mean)")
    fig.suptitle("Calibration error handed to the fit (synthetic-ort, gt-noisy evidence)")
    written.append(_save(fig, folder / "robustness_calibration.png"))
    # 2. View separation.
    sep = results.get("separation", {}).get("by_separation", {})
    if sep:
        degs = sorted(sep, key=int)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        _dice_and_entry(ax, [int(d) for d in degs], [sep[d] for d in degs], "angle between the two views (°)")
        ax.set_ylabel("Dice (mean)")
        ax.set_title("View separation (AP + one view, synthetic scenes)")
        written.append(_save(fig, folder / "robustness_separation.png"))
    # 3. Image and anatomy variants beside the exact baseline.
    names = [nm for nm in ("ort · exact", "ort · degraded images", "ort · fractured targets") if nm in results]
    if names:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(range(len(names)), [results[nm]["dice_mean"] for nm in names], color="tab:blue")
        ax.set_xticks(range(len(names)), [nm.removeprefix("ort · ") for nm in names])
        ax.set_ylim(0, 1)
        ax.set_ylabel("Dice (mean)")
        ax.set_title("Clean, degraded images, fractured targets (orthogonal pairs)")
        written.append(_save(fig, folder / "robustness_variants.png"))
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12, help="healthy scenes (one target each)")
    ap.add_argument("--n-fractured", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--figures", type=Path, default=Path(__file__).parent / "figures")
    ap.add_argument("--plots-only", action="store_true", help="only read finished runs, table and plots")
    args = ap.parse_args()
    args.figures.mkdir(parents=True, exist_ok=True)
    results = run_all(args)
    print(table(results))
    for p in plots(results, args.figures):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
