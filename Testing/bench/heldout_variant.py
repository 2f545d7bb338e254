"""Rebuild a training folder's held-out cases with the CT appearance or the detailed body switched (same
scene seeds, same views, same vertebrae): detectors trained with and without the CT appearance (``synth
--ct-appearance``) or the detailed body (``synth --detailed-body``) scored on the same images.

    python Testing/bench/heldout_variant.py --data D --out V [--[no-]ct-appearance] [--[no-]detailed-body]
    python Testing/bench/detector_eval.py --weights W --data V --split validation

D: a ``spinedart synth --randomize`` folder (its manifest gives seed, levels, views, options).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from SpineDARTLib.nets.detector_data import is_validation
from SpineDARTLib.synth import _plan, synthetic_case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ct-appearance", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--detailed-body", action=argparse.BooleanOptionalAction, help="default: as the data were made")
    a = ap.parse_args()
    manifest = a.data / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(
            f"heldout_variant: error: {manifest} is missing; fix: give the --out folder of spinedart synth"
        )
    m = json.loads(manifest.read_text())
    opts = m["options"]
    detailed = opts.get("detailed_body", False) if a.detailed_body is None else a.detailed_body
    for i in range(m["n"]):
        case_id = f"case_{i:04d}"
        if not is_validation(case_id):
            continue
        target, scene_seed, fractured = _plan(m["seed"], i, m["levels"], m["fractured"])
        synthetic_case(
            a.out / case_id, case_id, target, scene_seed, fractured, m["views"], m["detector_px"],
            degraded=opts["degraded"], randomized=opts["randomized"], ct_appearance=a.ct_appearance,
            detailed_body=detailed,
        )  # fmt: skip
        print(case_id, target, scene_seed, "fractured" if fractured else "healthy", flush=True)


if __name__ == "__main__":
    main()
