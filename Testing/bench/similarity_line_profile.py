"""The learned similarity along the straight line from a descent's start to the truth: is its minimum
where the truth is, and how wide is its basin? (issue 12, why the descent from 5 mm / 5° fails)

.venv/bin/python Testing/bench/similarity_line_profile.py --case DIR [--levels T9,T10,T12,L1] [--weights W] [--seed 0]

For each level on the case's first view pair: the instance initialised from the true landmarks
(the reference) and a start 5 mm / 5° off it (as similarity_eval.py draws them); at α = −0.5 … 1.5
along start → reference (pose and shape interpolated linearly; α 0 the start, 1 the reference):
the true MASD, the predicted MASD and 1 − gradient correlation (the fit's analytic term). Prints
one JSON line per level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO.parents[1]))

import similarity_eval as se  # noqa: E402

from SpineDARTLib.fit.learned import LearnedTerm  # noqa: E402
from SpineDARTLib.xray import read_xray  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", type=Path, required=True)
    ap.add_argument("--levels", default="T9,T10,T12,L1")
    ap.add_argument("--weights", type=Path, help="similarity weights (default: the shipped ones)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    doc = json.loads((a.case / "case.json").read_text())
    views = se.view_pairs(doc)[0][1]
    xr = [read_xray(a.case / v["image"], a.case / v["sidecar"]) for v in views]
    rng = np.random.default_rng(a.seed)
    for level in a.levels.split(","):
        model, ref, vert = se._reference(a.case, level, xr)
        gt = se.gt_points(a.case, vert)
        start = se._start(ref, rng)
        term = LearnedTerm([model], [x.image for x in xr], [x.projection for x in xr], a.weights, "cpu")
        gc = se._gc_objective(model, xr, start)
        rows = []
        for alpha in np.linspace(-0.5, 1.5, 9):
            state = {k: (1 - alpha) * np.asarray(start[k], float) + alpha * np.asarray(ref[k], float) for k in "brt"}
            p = {k: torch.tensor(np.asarray(state[k], np.float32)) for k in "brt"}
            with torch.no_grad():
                pred, analytic = float(term([p])), float(gc(p))
            rows.append({"alpha": round(float(alpha), 2), "true": round(se._true_masd(model, state, gt, 1), 2),
                         "pred": round(pred, 2), "one_minus_gc": round(analytic, 3)})  # fmt: skip
        print(json.dumps({"level": level, "profile": rows}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
