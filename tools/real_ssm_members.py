"""Write the real lumbar meshes of ``../shared/data`` as ``build-ssm`` members: one level-named
mesh per vertebra, in mm, RAS (Slicer's LPS marker on disk).

- VHP (``vhp-lumbar/L1.obj`` … ``L5.obj``): metres → mm; the OBJ's per-face normals split its
  vertices, so they are merged. RAS-like (z cranial): used as they are.
- Clouthier (``clouthier-mean-lumbar``): the mean L2–L5 of 87 patients, one mesh of four components
  (z cranial, so L2 is the top one), in mm with x ≈ antero-posterior and y ≈ left-right.

Laterality: the annotation rules build the anatomical frame from the anatomy (anterior = the body
side of the canal, superior = +z, right = anterior × superior), so only +z must be cranial, which
both sets satisfy. A mirrored mesh would still be annotated consistently (its "left" pedicle is the
one on the anatomical left of its mirrored frame); the script reports each mesh's handedness so
that a mirrored input is visible (the mean Clouthier shape is nearly symmetric either way).

    python tools/real_ssm_members.py --out /work/ssm-build/real-lumbar
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from SpineDARTLib.errors import UserError  # noqa: E402
from SpineDARTLib.mesh_io import write_mesh  # noqa: E402


def handedness(v: np.ndarray, f: np.ndarray) -> float:
    """det of (right, anterior, superior) read from the rule landmarks: +1 for a true vertebra in
    a right-handed frame. The rules pick left/right from anterior × superior, so this is +1 by
    construction unless the landmarks contradict the frame; printed as a consistency check."""
    from SpineDARTLib.anatomy.landmarks import annotate_mesh

    an = annotate_mesh(v, f)
    lm = an.landmarks
    r = lm["PCR"] - lm["PCL"]
    a = lm["VAP"] - lm["SPT"]
    s = lm["SEC"] - lm["IEC"]
    m = np.stack([r / np.linalg.norm(r), a / np.linalg.norm(a), s / np.linalg.norm(s)])
    return float(np.linalg.det(m))


def main() -> int:
    import trimesh

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if not (args.data / "vhp-lumbar").is_dir():
        print(f"real_ssm_members: error: {args.data}: no vhp-lumbar folder; fix: give --data", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for level in ("L1", "L2", "L3", "L4", "L5"):
        m = trimesh.load(args.data / "vhp-lumbar" / f"{level}.obj", process=False)
        m.merge_vertices(merge_tex=True, merge_norm=True)
        v, f = np.asarray(m.vertices) * 1000.0, np.asarray(m.faces)
        write_mesh(args.out / f"vhp_{level}.vtp", v, f)
        print(f"vhp_{level}: {len(v)} vertices, handedness {handedness(v, f):+.2f}")
    cl = args.data / "clouthier-mean-lumbar"
    if cl.is_dir():
        v = np.loadtxt(cl / "meanMesh_vertices.csv", delimiter=",")
        f = np.loadtxt(cl / "meanMesh_faces.csv", delimiter=",", dtype=np.int64) - 1
        parts = trimesh.Trimesh(v, f, process=False).split(only_watertight=False)
        parts = sorted(parts, key=lambda c: -c.vertices[:, 2].mean())  # z cranial: L2 on top
        for level, c in zip(("L2", "L3", "L4", "L5"), parts, strict=True):
            cv, cf = np.asarray(c.vertices), np.asarray(c.faces)
            write_mesh(args.out / f"clouthier_{level}.vtp", cv, cf)
            print(f"clouthier_{level}: {len(cv)} vertices, handedness {handedness(cv, cf):+.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        print(f"real_ssm_members: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(2)
