"""The planner-safety table of BENCHMARKS.md from benchmark results folders (records.jsonl + summary.json).

.venv/bin/python Testing/bench/plan_safety_table.py R/synthetic-ort R/real-ct ...
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

HEADER = [
    "set / method", "vertebrae", "completion", "bipedicular A/B", "cannulas planned", "flagged safe",
    "false-safe (true ≥ C)", "false-safe rate", "true grades A/B/C/D/E", "go / no-go / failed",
]  # fmt: skip


def rows(folder: Path) -> list[list[str]]:
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]
    name = json.loads((folder / "summary.json").read_text())["set"]
    out = []
    for method, label in (("fit", "fit"), ("ncc", "NCC baseline")):
        rs = [r for r in records if r["method"] == method and "plan" in r]
        if not rs:
            continue
        cannulas = [c for r in rs for c in r["plan"]["cannulas"]]
        safe = [c for c in cannulas if c["safe"]]
        false_safe = [c for c in safe if c["true"]["grade"] not in ("A", "B")]
        grades = Counter(c["true"]["grade"] for c in cannulas)
        status = Counter(r["plan"]["status"] for r in rs)
        out.append([
            f"{name} · {label}", str(len(rs)), f"{sum(r['converged'] for r in rs) / len(rs):.3f}",
            f"{sum(r['plan']['bipedicular_ab'] for r in rs) / len(rs):.3f}", str(len(cannulas)), str(len(safe)),
            str(len(false_safe)), f"{len(false_safe) / len(safe):.3f}" if safe else "–",
            "/".join(str(grades.get(g, 0)) for g in "ABCDE"),
            f"{status.get('go', 0)}/{status.get('no-go', 0)}/{status.get('failed', 0)}",
        ])  # fmt: skip
    return out


if __name__ == "__main__":
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for d in sys.argv[1:]:
        for row in rows(Path(d)):
            print("| " + " | ".join(row) + " |")
