"""Realism check (first part of the realism report): generated populations per level vs the real
lumbar meshes in ../shared/data (VHP L1-L5, used when present) and the morphometry table.

    python Testing/bench/generator_population.py [--n 20] [--seed0 0] [--json]

Per level: mean ± SD (and CV) of volume, transverse-process span (x extent), AP length (y extent,
anterior body to spinous tip) and pedicle outer width measured by the landmark rules; for L1-L5
the same measures on the VHP mesh of that level. Seeds seed0..seed0+n-1 (generator seeds, not
benchmark seeds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from SpineDARTLib.anatomy import LEVELS, generate
from SpineDARTLib.anatomy.landmarks import annotate_mesh
from SpineDARTLib.meshing import signed_volume

VHP = Path(__file__).resolve().parents[3] / "shared" / "data" / "vhp-lumbar"


def measures(v: np.ndarray, f: np.ndarray) -> dict[str, float]:
    an = annotate_mesh(v, f, 0.5)
    R = an.frame  # measure in the vertebra's own anatomical frame
    local = (v - an.landmarks["BC"]) @ R.T
    return {
        "volume_cm3": signed_volume(v, f) / 1000.0,
        "tp_span_mm": float(np.ptp(local[:, 0])),
        "ap_length_mm": float(np.ptp(local[:, 1])),
        "pedicle_width_mm": 0.5 * (an.pedicle_width_mm["left"]["outer"] + an.pedicle_width_mm["right"]["outer"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for level in a.levels.split(","):
        ms = [
            measures(*(lambda p: (p.vertices, p.faces))(generate(level, s, 1.0))) for s in range(a.seed0, a.seed0 + a.n)
        ]
        row = {"level": level}
        for k in ms[0]:
            x = np.array([m[k] for m in ms])
            row[k] = [round(float(x.mean()), 2), round(float(x.std()), 2), round(float(x.std() / x.mean()), 3)]
        if level.startswith("L") and VHP.is_dir():
            import trimesh

            mesh = trimesh.load(VHP / f"{level}.obj", process=False)
            mesh.merge_vertices()
            row["vhp"] = {
                k: round(v, 2) for k, v in measures(np.asarray(mesh.vertices) * 1000.0, np.asarray(mesh.faces)).items()
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        print(json.dumps({"benchmark": "generator_population", "n": a.n, "seed0": a.seed0, "rows": rows}))


if __name__ == "__main__":
    main()
