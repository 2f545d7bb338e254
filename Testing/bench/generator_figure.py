"""Figures for the realism report, each mesh in its own anatomical frame (landmark rules).

    python Testing/bench/generator_figure.py --which lumbar     # generated L1-L5 vs VHP and Clouthier
    python Testing/bench/generator_figure.py --which thoracic   # generated T1-T12 (no real thoracic mesh here)
    python Testing/bench/generator_figure.py --which fractures  # L1 healthy, wedge/biconcave/crush Genant 1-3
    python Testing/bench/generator_figure.py --which warps      # L3 out-of-family warps 0-5 mm

Generated vertebrae use seed 0. Written to Testing/bench/figures/generator_<which>.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from generator_realism import real_meshes  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from SpineDARTLib.anatomy import generate  # noqa: E402
from SpineDARTLib.anatomy.landmarks import annotate_mesh  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"
TOP, LATERAL = (90, -90), (0, 180)


def local(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    an = annotate_mesh(v, f)
    return (v - an.landmarks["BC"]) @ an.frame.T


def draw(ax, v, f, view, title, color, lim=(55, 85, 60)):
    ax.add_collection3d(Poly3DCollection(v[f], facecolors=color, edgecolors=color, linewidths=0.0, shade=True))
    ax.set_xlim(-lim[0], lim[0])
    ax.set_ylim(-lim[1], 45)
    ax.set_zlim(-lim[2], lim[2])
    ax.view_init(elev=view[0], azim=view[1])
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def lumbar(fig) -> None:
    levels = ["L1", "L2", "L3", "L4", "L5"]
    reals = real_meshes()
    rows = 2 + 2 * len(reals)
    for i, level in enumerate(levels):
        ph = generate(level, 0, 1.0)
        g = local(ph.vertices, ph.faces)
        draw(fig.add_subplot(rows, 5, 1 + i, projection="3d"), g, ph.faces, TOP, f"{level} generated", "tab:blue")
        draw(fig.add_subplot(rows, 5, 6 + i, projection="3d"), g, ph.faces, LATERAL, f"{level} generated", "tab:blue")
        for j, (name, meshes) in enumerate(reals.items()):
            if level not in meshes:
                continue
            v, f = meshes[level]
            r = local(v, f)
            color = ("tab:orange", "tab:green")[j % 2]
            draw(fig.add_subplot(rows, 5, 11 + 10 * j + i, projection="3d"), r, f, TOP, f"{level} {name}", color)
            draw(fig.add_subplot(rows, 5, 16 + 10 * j + i, projection="3d"), r, f, LATERAL, f"{level} {name}", color)


def thoracic(fig) -> None:
    levels = [f"T{i}" for i in range(1, 13)]
    for i, level in enumerate(levels):
        ph = generate(level, 0, 1.0)
        g = local(ph.vertices, ph.faces)
        base = 12 * (i // 6) + i % 6
        draw(
            fig.add_subplot(4, 6, 1 + base, projection="3d"), g, ph.faces, TOP, f"{level} top", "tab:blue", (45, 75, 50)
        )
        draw(
            fig.add_subplot(4, 6, 7 + base, projection="3d"),
            g,
            ph.faces,
            LATERAL,
            f"{level} lateral",
            "tab:blue",
            (45, 75, 50),
        )


def fractures(fig) -> None:
    cases = [(None, "healthy")] + [
        (f"{k}:{g}", f"{k} grade {g}") for k in ("wedge", "biconcave", "crush") for g in (1, 2, 3)
    ]
    for i, (frac, title) in enumerate(cases):
        ph = generate("L1", 0, 1.0, fracture=frac)
        loss = "" if ph.params.fracture is None else f" ({100 * ph.params.fracture.height_loss:.0f} % loss)"
        # The generator's own frame (not the rule frame) for all, so the collapse shows against
        # the same axes.
        draw(
            fig.add_subplot(2, 5, 1 + i, projection="3d"),
            ph.vertices,
            ph.faces,
            LATERAL,
            f"L1 {title}{loss}",
            "tab:red" if frac else "tab:blue",
            (35, 75, 35),
        )


def warps(fig) -> None:
    for i, w in enumerate((0.0, 2.0, 3.5, 5.0)):
        ph = generate("L3", 0, 1.0, warp_mm=w)
        v = ph.vertices  # generator frame: the warp shows as the bend it is
        draw(fig.add_subplot(2, 4, 1 + i, projection="3d"), v, ph.faces, TOP, f"L3 warp {w:g} mm (top)", "tab:purple")
        draw(
            fig.add_subplot(2, 4, 5 + i, projection="3d"),
            v,
            ph.faces,
            LATERAL,
            f"L3 warp {w:g} mm (lateral)",
            "tab:purple",
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", choices=("lumbar", "thoracic", "fractures", "warps"), default="lumbar")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    size = {"lumbar": (15, 10), "thoracic": (15, 9), "fractures": (15, 6), "warps": (12, 6)}[a.which]
    fig = plt.figure(figsize=size)
    globals()[a.which](fig)
    fig.tight_layout()
    out = a.out or FIGURES / f"generator_{a.which}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=75)
    print(out)


if __name__ == "__main__":
    main()
