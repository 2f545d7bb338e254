"""How the planner's safety margin trades safe flags against false-safe cannulas.

Re-plans the fits stored in a benchmark's ``records.jsonl`` (each record keeps the fitted
coefficients and pose) at several margins and counts, per margin, the cannulas flagged safe and how
many of them are truly grade C or worse (their true grades, against the GT surface, do not depend
on the margin and are read from the record). Synthetic sets only when choosing a margin: never the
real CT.

    .venv/bin/python Testing/bench/plan_margin.py --records R/synthetic-ort/records.jsonl \
        --work W [--margins 0,0.5,1,1.5,2] [--method fit]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineDARTLib.bench.accuracy import load_views, model_for  # noqa: E402
from SpineDARTLib.bench.sets import tasks_of  # noqa: E402
from SpineDARTLib.plan import Bone, plan_vertebra  # noqa: E402


def _tasks(work: Path) -> dict:
    out = {}
    for d in sorted(p for p in work.iterdir() if (p / "case.json").is_file()):
        for pairs in ("ort", "random"):
            for degraded in (False, True):
                for t in tasks_of(d, pairs, degraded):
                    out[t.key] = t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--margins", default="0,0.5,1,1.5,2")
    ap.add_argument("--method", default="fit")
    a = ap.parse_args()
    margins = [float(x) for x in a.margins.split(",")]
    tasks = _tasks(a.work)
    records = [json.loads(line) for line in a.records.read_text().splitlines() if line.strip()]
    records = [r for r in records if r["method"] == a.method and r.get("converged") and "fit" in r]
    counts = {m: {"safe": 0, "false_safe": 0, "cannulas": 0, "go": 0} for m in margins}
    for k, r in enumerate(records):
        task = tasks[r["task"]]
        _, xrays, _, _ = load_views(task)
        model = model_for(r["level"])
        f = r["fit"]
        pts = model.instance(np.array(f["coeffs"]), np.array(f["rotvec"]), np.array(f["translation_mm"]))
        ann = model.annotations(pts)
        bone = Bone(model.surface(pts), model.faces, ann, model.part_labels)
        true = {c["side"]: c["true"]["grade"] for c in r["plan"]["cannulas"]}
        for m in margins:
            vp = plan_vertebra(r["level"], bone, ann, True, "", [x.projection for x in xrays], margin_mm=m)
            counts[m]["go"] += vp.status == "go"
            for cp in vp.cannulas:
                counts[m]["cannulas"] += 1
                if cp.safe:
                    counts[m]["safe"] += 1
                    counts[m]["false_safe"] += true[cp.cannula.side] not in ("A", "B")
        print(f"{k + 1}/{len(records)} {r['task']}", file=sys.stderr)
    print(f"{len(records)} converged fits ({a.method}) from {a.records}")
    print("| margin (mm) | cannulas flagged safe | false-safe (true grade ≥ C) | false-safe rate | vertebrae 'go' |")
    print("|---|---|---|---|---|")
    for m, c in counts.items():
        rate = c["false_safe"] / c["safe"] if c["safe"] else float("nan")
        print(f"| {m:g} | {c['safe']}/{c['cannulas']} | {c['false_safe']} | {rate:.3f} | {c['go']}/{len(records)} |")


if __name__ == "__main__":
    main()
