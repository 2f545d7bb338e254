"""Realism report of the vertebra generator: generated populations per level vs real vertebrae
(lumbar: VHP L1-L5 and the Clouthier mean L2-L5 from ../shared/data, used when present) and vs the
published dimensions of the morphometry table (all levels; the only reference at thoracic levels).

    python Testing/bench/generator_realism.py [--n 8] [--seed0 0] [--levels T1,...,L5] [--json]

Per level, every measure taken the same way on generated and real meshes, in the vertebra's own
anatomical frame from the landmark rules (SpineDARTLib.anatomy.landmarks):
- volume of the closed surface; TP span (x extent); AP length (y extent, anterior body to SP tip);
- body width / depth: x extent of the bone > 2 mm anterior of the posterior wall (PWM), and VAP-PWM;
- pedicle width: mean outer isthmus width by the rule;
- surface distance (ASSD, HD95; SpineDARTLib.surface, 20 000 samples per side) between the
  generated *mean* vertebra (mean_params) and each real mesh after similarity alignment (frames from
  the landmark rules, scale from the volume ratio, then ICP with scale).
Generator seeds seed0..seed0+n-1 (not benchmark seeds). Reads ../shared/data; works without it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from SpineDARTLib.anatomy import LEVELS, generate
from SpineDARTLib.anatomy.landmarks import annotate_mesh
from SpineDARTLib.anatomy.levels import MORPHOMETRY
from SpineDARTLib.anatomy.vertebra import mean_params
from SpineDARTLib.meshing import signed_volume
from SpineDARTLib.surface import apply, similarity_align, surface_distances

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MEASURES = ("volume_cm3", "tp_span_mm", "ap_length_mm", "body_width_mm", "body_depth_mm", "pedicle_width_mm")


def real_meshes() -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{'VHP': {level: (v, f)}, 'Clouthier': {level: (v, f)}} in mm, for what is present."""
    import trimesh

    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    vhp = DATA / "vhp-lumbar"
    if vhp.is_dir():
        out["VHP"] = {}
        for level in ("L1", "L2", "L3", "L4", "L5"):
            m = trimesh.load(vhp / f"{level}.obj", process=False)
            m.merge_vertices(merge_tex=True, merge_norm=True)
            out["VHP"][level] = (np.asarray(m.vertices) * 1000.0, np.asarray(m.faces))
    cl = DATA / "clouthier-mean-lumbar"
    if cl.is_dir():
        v = np.loadtxt(cl / "meanMesh_vertices.csv", delimiter=",")
        f = np.loadtxt(cl / "meanMesh_faces.csv", delimiter=",", dtype=np.int64) - 1
        parts = trimesh.Trimesh(v, f, process=False).split(only_watertight=False)
        parts = sorted(parts, key=lambda c: -c.vertices[:, 2].mean())  # z is cranial: L2 on top
        out["Clouthier"] = {
            lv: (np.asarray(c.vertices), np.asarray(c.faces))
            for lv, c in zip(("L2", "L3", "L4", "L5"), parts, strict=True)
        }
    return out


def measures(v: np.ndarray, f: np.ndarray, an=None) -> dict[str, float]:
    an = an or annotate_mesh(v, f, 0.5)
    lm = an.landmarks
    local = (v - lm["BC"]) @ an.frame.T
    pwm_y = float((lm["PWM"] - lm["BC"]) @ an.frame[1])
    vap_y = float((lm["VAP"] - lm["BC"]) @ an.frame[1])
    body = local[local[:, 1] > pwm_y + 2.0]
    return {
        "volume_cm3": signed_volume(v, f) / 1000.0,
        "tp_span_mm": float(np.ptp(local[:, 0])),
        "ap_length_mm": float(np.ptp(local[:, 1])),
        "body_width_mm": float(np.ptp(body[:, 0])),
        "body_depth_mm": vap_y - pwm_y,
        "pedicle_width_mm": 0.5 * (an.pedicle_width_mm["left"]["outer"] + an.pedicle_width_mm["right"]["outer"]),
    }


def aligned_distance(gen: tuple[np.ndarray, np.ndarray], real: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """Similarity-align the generated mesh onto the real one and measure the surface distance."""
    ag, ar = annotate_mesh(*gen), annotate_mesh(*real)
    s = np.cbrt(signed_volume(*real) / signed_volume(*gen))
    m0 = np.eye(4)
    m0[:3, :3] = s * ar.frame.T @ ag.frame  # generated frame onto the real frame
    m0[:3, 3] = ar.landmarks["BC"] - m0[:3, :3] @ ag.landmarks["BC"]
    matrix, _ = similarity_align(gen, real, initial=m0)
    d = surface_distances((apply(matrix, gen[0]), gen[1]), real)
    return {
        "assd_mm": round(d.assd, 2),
        "hd95_mm": round(d.hd95, 2),
        "scale": round(float(np.cbrt(np.linalg.det(matrix[:3, :3]))), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    reals = real_meshes()
    rows = []
    for level in a.levels.split(","):
        ms = [
            measures(*(lambda p: (p.vertices, p.faces))(generate(level, s, 1.0))) for s in range(a.seed0, a.seed0 + a.n)
        ]
        row: dict = {"level": level, "generated": {}}
        for k in MEASURES:
            x = np.array([m[k] for m in ms])
            row["generated"][k] = [
                round(float(x.mean()), 2),
                round(float(x.std()), 2),
                round(float(x.std() / x.mean()), 3),
            ]
        t = MORPHOMETRY[level]
        row["table"] = {
            "body_width_mm": t.body_width,
            "body_depth_mm": t.body_depth,
            "pedicle_width_mm": t.pedicle_width,
            "tp_span_mm": t.tp_span,
        }
        mean = generate(level, 0, 1.0, params=mean_params(level))
        row["generated_mean"] = {k: round(v, 2) for k, v in measures(mean.vertices, mean.faces).items()}
        for name, meshes in reals.items():
            if level in meshes:
                real = meshes[level]
                row[name] = {k: round(v, 2) for k, v in measures(*real).items()}
                row[name].update(aligned_distance((mean.vertices, mean.faces), real))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.json:
        print(json.dumps({"benchmark": "generator_realism", "n": a.n, "seed0": a.seed0, "rows": rows}))


if __name__ == "__main__":
    main()
