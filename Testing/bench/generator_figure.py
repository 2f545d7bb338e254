"""Figure for the realism report: generated vertebrae (seed 0) beside the VHP meshes, L1-L5, each
in its own anatomical frame (from the landmark rules), top and lateral views.

    python Testing/bench/generator_figure.py [--out Testing/bench/figures/generator_lumbar.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Poly3DCollection  # noqa: E402

from SpineDARTLib.anatomy import generate  # noqa: E402
from SpineDARTLib.anatomy.landmarks import annotate_mesh  # noqa: E402

VHP = Path(__file__).resolve().parents[3] / "shared" / "data" / "vhp-lumbar"


def local(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    an = annotate_mesh(v, f)
    return (v - an.landmarks["BC"]) @ an.frame.T


def draw(ax, v, f, elev, azim, title, color):
    ax.add_collection3d(Poly3DCollection(v[f], facecolors=color, edgecolors=color, linewidths=0.0, shade=True))
    ax.set_xlim(-55, 55)
    ax.set_ylim(-85, 45)
    ax.set_zlim(-60, 60)
    ax.view_init(elev=elev, azim=azim)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures" / "generator_lumbar.png")
    a = ap.parse_args()
    levels = ["L1", "L2", "L3", "L4", "L5"]
    fig = plt.figure(figsize=(15, 7))
    for i, level in enumerate(levels):
        ph = generate(level, 0, 1.0)
        g = local(ph.vertices, ph.faces)
        draw(
            fig.add_subplot(4, 5, 1 + i, projection="3d"), g, ph.faces, 90, -90, f"{level} generated (top)", "tab:blue"
        )
        draw(
            fig.add_subplot(4, 5, 6 + i, projection="3d"),
            g,
            ph.faces,
            0,
            180,
            f"{level} generated (lateral)",
            "tab:blue",
        )
        if VHP.is_dir():
            import trimesh

            m = trimesh.load(VHP / f"{level}.obj", process=False)
            m.merge_vertices()
            f = np.asarray(m.faces)
            r = local(np.asarray(m.vertices) * 1000.0, f)
            draw(fig.add_subplot(4, 5, 11 + i, projection="3d"), r, f, 90, -90, f"{level} VHP (top)", "tab:orange")
            draw(fig.add_subplot(4, 5, 16 + i, projection="3d"), r, f, 0, 180, f"{level} VHP (lateral)", "tab:orange")
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=60)
    print(a.out)


if __name__ == "__main__":
    main()
